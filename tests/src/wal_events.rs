//! Random `SourceChange`s for the write-ahead log tests and benchmark,
//! covering every element shape and value type the WAL encoding handles.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use drasi_core::interface::FutureElementRef;
use drasi_core::models::{
    Element, ElementMetadata, ElementPropertyMap, ElementReference, ElementValue, SourceChange,
};
use ordered_float::OrderedFloat;
use rand::Rng;

/// A change of the kinds a transient source appends (never `Future`).
pub fn random_change(rng: &mut impl Rng, source: &str) -> SourceChange {
    let id = format!("e{}", rng.gen_range(0..50));
    let metadata = metadata(rng, source, &id);
    match rng.gen_range(0..5) {
        0 => SourceChange::Delete { metadata },
        1 => SourceChange::Update {
            element: node(rng, metadata),
        },
        2 => SourceChange::Insert {
            element: Element::Relation {
                metadata,
                in_node: ElementReference::new(source, &format!("e{}", rng.gen_range(0..50))),
                out_node: ElementReference::new(source, &format!("e{}", rng.gen_range(0..50))),
                properties: properties(rng, 0),
            },
        },
        _ => SourceChange::Insert {
            element: node(rng, metadata),
        },
    }
}

/// A `Future` change, which every provider must refuse.
pub fn future_change(source: &str) -> SourceChange {
    SourceChange::Future {
        future_ref: FutureElementRef {
            element_ref: ElementReference::new(source, "f"),
            original_time: 1,
            due_time: 2,
            group_signature: 3,
        },
    }
}

/// A small node change like an application source sends: one label, a
/// few properties.
pub fn order_change(source: &str, n: u64) -> SourceChange {
    let mut props = ElementPropertyMap::new();
    props.insert("n", ElementValue::Integer(n as i64));
    props.insert("status", ElementValue::String(Arc::from("placed")));
    SourceChange::Insert {
        element: Element::Node {
            metadata: ElementMetadata {
                reference: ElementReference::new(source, &format!("order-{n}")),
                labels: Arc::from(vec![Arc::from("Order")]),
                effective_from: 1_700_000_000_000 + n,
            },
            properties: props,
        },
    }
}

fn metadata(rng: &mut impl Rng, source: &str, id: &str) -> ElementMetadata {
    let labels: Vec<Arc<str>> = (0..rng.gen_range(0..3))
        .map(|i| Arc::from(["Order", "Customer", "Ünïcode"][i]))
        .collect();
    ElementMetadata {
        reference: ElementReference::new(source, id),
        labels: Arc::from(labels),
        effective_from: rng.gen_range(0..2_000_000_000_000),
    }
}

fn node(rng: &mut impl Rng, metadata: ElementMetadata) -> Element {
    Element::Node {
        metadata,
        properties: properties(rng, 0),
    }
}

fn properties(rng: &mut impl Rng, depth: usize) -> ElementPropertyMap {
    let mut map = ElementPropertyMap::new();
    for i in 0..rng.gen_range(0..5) {
        map.insert(&format!("p{i}"), value(rng, depth));
    }
    map
}

fn value(rng: &mut impl Rng, depth: usize) -> ElementValue {
    let kinds = if depth >= 2 { 7 } else { 9 };
    match rng.gen_range(0..kinds) {
        0 => ElementValue::Null,
        1 => ElementValue::Bool(rng.r#gen()),
        2 => ElementValue::Float(OrderedFloat(rng.gen_range(-1e9..1e9))),
        3 => ElementValue::Integer(rng.r#gen()),
        4 => ElementValue::String(Arc::from(format!("s-{}-✓", rng.gen_range(0..1000)))),
        5 => {
            // Whole microseconds: the reference provider stores date-times
            // as text, which is exact at this precision.
            let secs = rng.gen_range(0..4_000_000_000i64);
            let micros = rng.gen_range(0..1_000_000u32);
            let dt = DateTime::from_timestamp(secs, micros * 1000).expect("in range");
            ElementValue::LocalDateTime(dt.naive_utc())
        }
        6 => {
            let secs = rng.gen_range(0..4_000_000_000i64);
            let offset = FixedOffset::east_opt(rng.gen_range(-12..=14) * 3600).expect("valid");
            let dt = DateTime::from_timestamp(secs, 0).expect("in range");
            ElementValue::ZonedDateTime(dt.with_timezone(&offset))
        }
        7 => ElementValue::List(
            (0..rng.gen_range(0..3))
                .map(|_| value(rng, depth + 1))
                .collect(),
        ),
        _ => ElementValue::Object(properties(rng, depth + 1)),
    }
}

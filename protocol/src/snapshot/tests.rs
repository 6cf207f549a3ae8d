use super::*;

fn sample_header() -> SnapshotHeader {
    SnapshotHeader {
        created_at_unix_ms: Some(1_700_000_000_123),
        server_version: Some("0.1.0".into()),
        selected_stores: vec!["a".into(), "b/ü".into()],
        last_applied_index: Some(42),
    }
}

fn encode(header: &SnapshotHeader, records: &[(&str, &str, &[u8])]) -> (Vec<u8>, SnapshotSummary) {
    let mut w = SnapshotWriter::new(Vec::new(), header).unwrap();
    for (s, k, v) in records {
        w.write_record(s, k, v).unwrap();
    }
    let (summary, out) = w.finish().unwrap();
    (out, summary)
}

fn read_all(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<Record>, SnapshotSummary), SnapshotError> {
    let mut r = SnapshotReader::new(bytes)?;
    let mut records = Vec::new();
    while let Some(rec) = r.next_record()? {
        records.push(rec);
    }
    let summary = r.summary().cloned().unwrap();
    Ok((r.header().clone(), records, summary))
}

const RECORDS: &[(&str, &str, &[u8])] = &[
    ("", "", b""),
    ("a", "k1", b"v1"),
    ("a", "k2", &[0, 255, 7]),
    ("b/\u{fc}", "", b"x"),
    ("b/\u{fc}", "z", b""),
];

#[test]
fn round_trips_header_records_and_summary() {
    let (bytes, written) = encode(&sample_header(), RECORDS);
    let (header, records, read) = read_all(&bytes).unwrap();
    assert_eq!(header, sample_header());
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.store_id.as_str(), r.key.as_str(), r.value.as_slice()))
        .collect();
    assert_eq!(got, RECORDS);
    assert_eq!(written, read);
    assert_eq!(read.records, 5);
    assert_eq!(read.stores, 3);
    assert_eq!(read.bytes, bytes.len() as u64);
    let sha: [u8; 32] = sha2::Sha256::digest(&bytes[..bytes.len() - 32]).into();
    use sha2::Digest as _;
    assert_eq!(read.sha256, sha);
}

#[test]
fn empty_snapshot_is_valid() {
    let (bytes, summary) = encode(&SnapshotHeader::default(), &[]);
    let (header, records, read) = read_all(&bytes).unwrap();
    assert_eq!(header, SnapshotHeader::default());
    assert!(records.is_empty());
    assert_eq!((read.records, read.stores), (0, 0));
    assert_eq!(read, summary);
}

/// Every prefix of a valid snapshot, and a flip of every single byte (all
/// bits, and the lowest bit alone), must fail: nothing corrupt reads as valid.
#[test]
fn every_truncation_and_every_flipped_byte_is_detected() {
    let (bytes, _) = encode(&sample_header(), RECORDS);
    for len in 0..bytes.len() {
        assert!(
            read_all(&bytes[..len]).is_err(),
            "truncation to {len} of {} bytes went undetected",
            bytes.len()
        );
    }
    for pos in 0..bytes.len() {
        for mask in [0xFF, 0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[pos] ^= mask;
            assert!(
                read_all(&bad).is_err(),
                "flip {mask:#04x} at byte {pos} went undetected"
            );
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        read_all(&longer),
        Err(SnapshotError::TrailingBytes { .. })
    ));
}

#[test]
fn errors_name_the_problem() {
    let (bytes, _) = encode(&sample_header(), RECORDS);
    let mut v2 = bytes.clone();
    v2[9] = 2;
    let err = read_all(&v2).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("version 2 is not supported"),
        "{err}"
    );

    assert!(matches!(
        read_all(b"PK\x03\x04 not a snapshot"),
        Err(SnapshotError::BadMagic)
    ));
    let cut = read_all(&bytes[..bytes.len() - 40]).unwrap_err();
    assert!(cut.to_string().contains("truncated"), "{cut}");

    // Corrupt a value byte in the last record: its own checksum catches it.
    let mut flipped = bytes.clone();
    let value_pos = bytes.len() - 32 - 9 - 4 - 1;
    flipped[value_pos - 1] ^= 0x10;
    let err = read_all(&flipped).unwrap_err();
    assert!(
        matches!(err, SnapshotError::RecordChecksum { index: 4, .. }),
        "{err}"
    );
}

#[test]
fn writer_refuses_out_of_order_and_duplicate_records() {
    let mut w = SnapshotWriter::new(Vec::new(), &SnapshotHeader::default()).unwrap();
    w.write_record("b", "k", b"").unwrap();
    assert!(matches!(
        w.write_record("b", "k", b""),
        Err(SnapshotError::OutOfOrder { index: 1, .. })
    ));
    assert!(matches!(
        w.write_record("a", "z", b""),
        Err(SnapshotError::OutOfOrder { .. })
    ));
    w.write_record("b", "l", b"").unwrap();
    w.write_record("c", "", b"").unwrap();
    let (summary, _) = w.finish().unwrap();
    assert_eq!((summary.records, summary.stores), (3, 2));
}

#[test]
fn unknown_optional_header_fields_are_skipped_and_critical_ones_refused() {
    let mut fields = sample_header().encode().unwrap();
    fields.extend_from_slice(&7u16.to_be_bytes());
    fields.extend_from_slice(&3u32.to_be_bytes());
    fields.extend_from_slice(b"new");
    assert_eq!(SnapshotHeader::decode(&fields).unwrap(), sample_header());
    fields.extend_from_slice(&(header::CRITICAL | 1).to_be_bytes());
    fields.extend_from_slice(&0u32.to_be_bytes());
    let err = SnapshotHeader::decode(&fields).unwrap_err();
    assert!(err.to_string().contains("newer version"), "{err}");
}

#[test]
fn a_corrupt_length_does_not_allocate_the_claimed_size() {
    let (bytes, _) = encode(&SnapshotHeader::default(), &[("s", "k", b"v")]);
    // The first record starts right after magic, version, empty header and crc.
    let rec = 8 + 2 + 4 + 4;
    let mut bad = bytes.clone();
    bad[rec + 9..rec + 13].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = read_all(&bad).unwrap_err();
    assert!(matches!(err, SnapshotError::Truncated { .. }), "{err}");
}

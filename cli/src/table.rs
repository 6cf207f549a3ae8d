//! kubectl-style tables: upper-case headers, columns padded to their widest
//! cell and separated by three spaces, no trailing spaces.

/// Renders `rows` under `headers`; a missing value is shown as `<none>`.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(display(cell).chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = display(row.get(i).map(String::as_str).unwrap_or(""));
            if i + 1 < widths.len() {
                line.push_str(&format!("{cell:<width$}   "));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn display(cell: &str) -> &str {
    if cell.is_empty() { "<none>" } else { cell }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn pads_columns_and_marks_empty_cells() {
        let out = render(
            &["NAME", "READY", "MESSAGE"],
            &[
                vec!["orders-0".into(), "1/1".into(), "".into()],
                vec!["a".into(), "0/1".into(), "waiting".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME       READY   MESSAGE\n\
             orders-0   1/1     <none>\n\
             a          0/1     waiting\n"
        );
    }

    #[test]
    fn no_rows_is_just_the_header() {
        assert_eq!(render(&["A", "B"], &[]), "A   B\n");
    }
}

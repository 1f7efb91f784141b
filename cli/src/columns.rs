//! Aligned columns, as kubectl's tabwriter prints tables (`get`) and lists (`describe`).

/// The width (in characters) of each column over all `rows`.
pub fn widths<'a>(rows: impl IntoIterator<Item = &'a [String]>) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    widths
}

/// One line: every cell but the last padded to its column's width and followed by `gap` spaces;
/// trailing spaces trimmed.
pub fn row(cells: &[String], widths: &[usize], gap: usize) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            out.push_str(cell);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            out.push_str(&format!("{cell:<w$}{:gap$}", ""));
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns() {
        let rows: Vec<Vec<String>> =
            vec![vec!["NAME".into(), "AGE".into()], vec!["web-1".into(), "5s".into()], vec!["é".into(), "".into()]];
        let w = widths(rows.iter().map(Vec::as_slice));
        assert_eq!(w, [5, 3]);
        assert_eq!(row(&rows[0], &w, 3), "NAME    AGE");
        assert_eq!(row(&rows[1], &w, 2), "web-1  5s");
        assert_eq!(row(&rows[2], &w, 3), "é");
    }
}

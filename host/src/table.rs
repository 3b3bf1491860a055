//! The CLI's tables (`ps`, `images`, `search`, `volume ls`): columns as wide as their widest
//! cell, so long names never push a row out of line. Every cell is escaped ([`safe`]) before
//! it is measured: names, tags and states can come from a registry or a container.

use crate::market::safe;

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq)]
pub enum Align {
    Left,
    /// Numbers and sizes.
    Right,
}

pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// A row of cells, one per column (missing ones are empty).
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| safe(c.as_ref()).into_owned())
                .collect(),
        );
    }

    /// The table as text, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([self.headers[i].0.len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, (cell, (w, (_, align)))) in
                cells.zip(widths.iter().zip(&self.headers)).enumerate()
            {
                if i > 0 {
                    out.push_str("  ");
                }
                match align {
                    Align::Left => out.push_str(&format!("{cell:<w$}")),
                    Align::Right => out.push_str(&format!("{cell:>w$}")),
                }
            }
            out.trim_end().to_string()
        };
        let mut text = line(&mut self.headers.iter().map(|(h, _)| *h));
        text.push('\n');
        for r in &self.rows {
            let mut cells = r
                .iter()
                .map(String::as_str)
                .chain(std::iter::repeat(""))
                .take(self.headers.len());
            text.push_str(&line(&mut cells));
            text.push('\n');
        }
        text
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Bytes as `ls -h` and `podman images` show them: `14.2 MB`, `812 kB`, `0 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value >= 100.0 => format!("{value:.0} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("SIZE", Align::Right),
            ("X", Align::Left),
        ]);
        t.row(["a-rather-long-name-indeed", "12", "y"]);
        t.row(["b", "1234567", ""]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME                          SIZE  X");
        assert_eq!(lines[1], "a-rather-long-name-indeed       12  y");
        assert_eq!(lines[2], "b                          1234567");
        // A cell from elsewhere cannot drive the terminal.
        let mut t = Table::new(&[("NAME", Align::Left)]);
        t.row(["evil\x1b[2J"]);
        assert!(!t.render().contains('\x1b'));
    }

    #[test]
    fn sizes_read_as_podman_shows_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(14_200_000), "14.2 MB");
        assert_eq!(human_size(187_654_321), "188 MB");
        assert_eq!(human_size(1_500_000_000), "1.5 GB");
    }
}

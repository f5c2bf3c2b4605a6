//! Output formats: aligned text tables for people, JSON for scripts.

use clap::ValueEnum;

/// `-o table|json|simple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text and aligned tables.
    Table,
    /// One JSON document per result (one per line for `watch`).
    Json,
    /// etcdctl v2's default: bare values and key names, one per line (`ls` prints keys only,
    /// `watch` the new value). Commands without such a form print their table.
    Simple,
}

/// A plain column-aligned table. Hand-written because the needs are tiny (no borders, no wrapping)
/// and operators pipe it to `awk`/`column`, which borders would break.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let ncol = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(ncol) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                s.push_str(c);
                if i + 1 < ncol {
                    s.push_str(&" ".repeat(w - c.chars().count() + 2));
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// `-` for values a source does not provide, so columns stay aligned and parseable.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["ID", "NAME", "ROLE"]);
        t.row(vec!["a1".into(), "n1".into(), "leader".into()]);
        t.row(vec!["b".into(), "node-two".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "ID  NAME      ROLE\na1  n1        leader\nb   node-two  -\n"
        );
    }

    #[test]
    fn opt_dash() {
        assert_eq!(opt(Some(3)), "3");
        assert_eq!(opt::<u64>(None), "-");
    }
}

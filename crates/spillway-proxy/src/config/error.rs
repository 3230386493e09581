//! Config errors that say where: file, line, column and key.

use std::fmt;

/// A config file that cannot be used, and where the problem is.
///
/// Displayed as `file:line:column: key: message`, the form editors jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>` for text not read from a file).
    pub file: String,
    /// 1-based line of the offending key or value (0: not in the text, such as a missing file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key, as a path: `routes[0].concurrency.queue_timeout`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Line and column (1-based) of byte `offset` in `src`.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// The byte offset where `key` (a path such as `routes[2].concurrency.max`) is written in `src`:
/// its value if present, else the nearest enclosing table that is.
pub(crate) fn locate(src: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut best = None;
    let mut item: Option<&toml_edit::Item> = Some(doc.as_item());
    for part in key.split('.') {
        let (name, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let Some(cur) = item else { break };
        let mut next = if name.is_empty() { Some(cur) } else { cur.get(name) };
        for idx in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            next = next.and_then(|n| n.get(idx.parse::<usize>().ok()?));
        }
        if let Some(span) = next.and_then(toml_edit::Item::span) {
            best = Some(span.start);
        }
        item = next;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_in_arrays_of_tables() {
        let src =
            "[[routes]]\nlistener = \"a\"\n\n[[routes]]\nlistener = \"b\"\n[routes.concurrency]\nmax = 0\n";
        let at = |k| locate(src, k).map(|o| line_col(src, o));
        assert_eq!(at("routes[1].listener"), Some((5, 12)));
        assert_eq!(at("routes[1].concurrency.max"), Some((7, 7)));
        assert_eq!(at("routes[0].listener"), Some((2, 12)));
    }
}

//! What the log shipper has read of tierlog's files: its positions file, in
//! Promtail's layout (`positions: {<path>: "<offset>"}`) or Grafana Alloy's (the key
//! is `{path, labels}`). The file tier reads it before deleting a rotated file, so
//! no file leaves before the shipper has read it to the end.
//!
//! Files are matched by name, not full path: the shipper usually sees tierlog's
//! directory under another mount point, and tierlog never writes one name twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// The shipper's positions file.
#[derive(Debug, Clone)]
pub struct ShipperPositions {
    path: PathBuf,
}

/// Why the positions could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is not a Promtail or Alloy positions file: {1}")]
    Format(PathBuf, String),
}

impl ShipperPositions {
    /// Positions kept at `path`.
    pub fn new(path: PathBuf) -> ShipperPositions {
        ShipperPositions { path }
    }

    /// Bytes read so far, by file name. A file the shipper has not started is absent;
    /// so is everything while the shipper has not written the file yet.
    pub fn read(&self) -> Result<HashMap<String, u64>, PositionsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(PositionsError::Read(self.path.clone(), e)),
        };
        parse(&text).map_err(|reason| PositionsError::Format(self.path.clone(), reason))
    }
}

/// Offsets by file name from either layout. A name listed more than once (Alloy
/// keeps one entry per label set, and a changed label set leaves the old one behind)
/// counts with its furthest offset.
fn parse(text: &str) -> Result<HashMap<String, u64>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut offsets = HashMap::new();
    let Some(doc) = docs.first() else { return Ok(offsets) };
    let entries = match &doc["positions"] {
        Yaml::Hash(entries) => entries,
        Yaml::Null | Yaml::BadValue => return Ok(offsets),
        _ => return Err("`positions` is not a map".into()),
    };
    for (key, value) in entries {
        let path = match key {
            Yaml::String(path) => path.as_str(),
            Yaml::Hash(_) => key["path"].as_str().ok_or("an entry has no path")?,
            _ => return Err("an entry's key is neither a path nor {path, labels}".into()),
        };
        let offset = match value {
            Yaml::String(text) => text.parse::<u64>().ok(),
            Yaml::Integer(n) => u64::try_from(*n).ok(),
            _ => None,
        };
        // Journal cursors and other non-file entries hold no byte offset.
        let (Some(offset), Some(name)) = (offset, Path::new(path).file_name()) else { continue };
        let slot = offsets.entry(name.to_string_lossy().into_owned()).or_insert(0);
        *slot = (*slot).max(offset);
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promtail_positions_are_read_by_file_name() {
        let text = "positions:\n  /var/log/tierlog/audit.20261202.000001.jsonl: \"10485760\"\n  /var/log/tierlog/audit.20261202.000002.jsonl: \"512\"\n  cursor-journal: \"s=abc;i=1\"\n";
        let offsets = parse(text).expect("promtail");
        assert_eq!(offsets.get("audit.20261202.000001.jsonl"), Some(&10_485_760));
        assert_eq!(offsets.get("audit.20261202.000002.jsonl"), Some(&512));
        assert_eq!(offsets.len(), 2);
    }

    #[test]
    fn alloy_positions_with_label_keys_are_read_and_the_furthest_entry_wins() {
        let text = r#"positions:
  ? path: /var/log/tierlog/audit.20261202.000001.jsonl
    labels: '{filename="/var/log/tierlog/audit.20261202.000001.jsonl", service="tierlog"}'
  : "100"
  ? path: /var/log/tierlog/audit.20261202.000001.jsonl
    labels: '{service="tierlog"}'
  : "2048"
  ? path: /var/log/tierlog/audit.20261202.000003.jsonl
    labels: '{service="tierlog"}'
  : "7"
"#;
        let offsets = parse(text).expect("alloy");
        assert_eq!(offsets.get("audit.20261202.000001.jsonl"), Some(&2048));
        assert_eq!(offsets.get("audit.20261202.000003.jsonl"), Some(&7));
    }

    #[test]
    fn an_empty_or_missing_file_means_nothing_was_read_and_garbage_is_an_error() {
        assert!(parse("").expect("empty").is_empty());
        assert!(parse("positions:\n").expect("no entries").is_empty());
        assert!(parse("positions: [1, 2]").is_err());
        assert!(parse("positions: {").is_err());
        let missing = ShipperPositions::new(PathBuf::from("/nonexistent/positions.yaml"));
        assert!(missing.read().expect("absent").is_empty());
    }
}

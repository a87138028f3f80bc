//! Reading back what a rotating output left: every file of a directory, `.gz` ones
//! decompressed, and the sequence-numbered records the rotation tests log.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Every regular file in `dir` (not hidden), by name, with its content (`.gz`
/// decompressed).
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read the log directory") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().expect("file type").is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("read a log file");
        let content = if name.ends_with(".gz") {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .expect("a whole gzip file");
            plain
        } else {
            bytes
        };
        found.insert(name, content);
    }
    found
}

/// The file names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the log directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A record the tests log: `seq <writer> <n>` (after the line's prefix).
pub fn parse_seq(line: &str) -> Option<(String, u64)> {
    let rest = &line[line.find("seq ")? + 4..];
    let mut parts = rest.split(' ');
    let writer = parts.next()?.to_owned();
    let n = parts.next()?.parse().ok()?;
    Some((writer, n))
}

/// Every `seq` record in `content`, in file order.
pub fn seqs(content: &[u8]) -> Vec<(String, u64)> {
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(parse_seq)
        .collect()
}

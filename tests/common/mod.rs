//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::Path;

/// The sorted names of every entry in `dir` (empty if `dir` is missing).
pub fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> =
        entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// The names in `dir` that look like a save's temp file: `.….tmp`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.starts_with('.') && n.ends_with(".tmp")).collect()
}

//! The crate's modules import only downward: every `crate::` path in
//! `src/` (comments and doc links aside) names a module in the same layer or
//! a lower one, and no modules import each other in a cycle; nor do the
//! files of one module (`super::`, `self::` and `crate::` paths, and a
//! `mod.rs`'s own `use child::`; a `pub use` re-export is a module's face,
//! not a dependency).
//!
//! `.ci/run` runs this test on its own as the import-cycle check; it is part
//! of a plain `cargo test` too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may import modules of its own layer or below.
const LAYERS: &[&[&str]] = &[
    &["fork", "fs", "digest", "key"],
    &["error", "sim"],
    &["envelope"],
    &["meta", "names"],
    &["observe"],
    &["backend"],
    &["store"],
    &["policy", "dictionary", "rollback"],
    &["journal", "reconcile"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file of `src/` belongs to (`None` for the crate
/// root and the CLI binary, which sit above every layer).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    if first == "lib.rs" || first == "bin" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` without comments (line comments, doc comments and
/// block comments) and without string literals' contents.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

/// Names re-exported at the crate root, mapped to the module they come from
/// (`pub use store::{Store, KeyLock};` gives `Store -> store`).
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let code = code_only(lib);
    let mut map = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else { continue };
        let Some((module, names)) = rest.split_once("::") else { continue };
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// Every module that `code` names through `crate::`, including the
/// `use crate::{a::X, b}` form.
fn imports(
    code: &str,
    exports: &BTreeMap<String, String>,
    modules: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut resolve = |first: &str| {
        if modules.contains(first) {
            found.insert(first.to_owned());
        } else if let Some(module) = exports.get(first) {
            found.insert(module.clone());
        }
    };
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `$crate::`, `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                resolve(&ident(item.trim()));
            }
        } else {
            resolve(&ident(rest));
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let exports = root_exports(&fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let code = code_only(&fs::read_to_string(file).expect("read source"));
        let mut deps = imports(&code, &exports, &modules);
        deps.remove(&module);
        graph.entry(module).or_default().extend(deps);
    }
    graph
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied() {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn modules_import_only_downward() {
    let graph = graph();
    println!("module graph (module: the modules it imports):");
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("  {module}: {}", deps.join(" "));
    }
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        let Some(mine) = layer_of(module) else {
            wrong.push(format!(
                "module `{module}` is in no layer: add it to LAYERS in tests/layers.rs"
            ));
            continue;
        };
        for dep in deps {
            match layer_of(dep) {
                Some(theirs) if theirs <= mine => {}
                Some(theirs) => wrong.push(format!(
                    "`{module}` (layer {mine}) imports `{dep}` (layer {theirs}), a layer above it"
                )),
                None => wrong.push(format!("`{module}` imports `{dep}`, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_cycles() {
    let graph = graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle among the crate's modules: {}", cycle.join(" -> "));
    }
}

/// A file's module path (`store/save.rs` is `["store", "save"]`,
/// `store/mod.rs` is `["store"]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The files `code` (of the file at module path `me`) imports, among
/// `files` (module path -> file name): each path is resolved to the
/// longest module path that is a file.
fn file_imports(
    code: &str,
    me: &[String],
    files: &BTreeMap<Vec<String>, String>,
) -> BTreeSet<String> {
    // Re-exports are the module's face, not what it depends on.
    let mut kept = String::with_capacity(code.len());
    for stmt in code.split_inclusive(';') {
        let t = stmt.trim_start();
        if !(t.starts_with("pub use") || t.starts_with("pub(crate) use")) {
            kept.push_str(stmt);
        }
    }
    let resolve = |mut path: Vec<String>| -> Option<String> {
        while !path.is_empty() {
            if let Some(f) = files.get(&path) {
                return Some(f.clone());
            }
            path.pop();
        }
        None
    };
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    };
    let mut found = BTreeSet::new();
    let bytes = kept.as_bytes();
    let mut i = 0;
    while i < kept.len() {
        let rest = &kept[i..];
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b'$'
                || bytes[i - 1] == b':');
        let start: Option<(Vec<String>, usize)> = if !boundary {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("self::") {
            Some((me.to_vec(), "self::".len()))
        } else if rest.starts_with("super::") {
            let mut n = 0;
            let mut at = 0;
            while rest[at..].starts_with("super::") {
                n += 1;
                at += "super::".len();
            }
            Some((me[..me.len().saturating_sub(n)].to_vec(), at))
        } else {
            None
        };
        let Some((mut path, skip)) = start else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let mut at = skip;
        loop {
            let seg = ident(&rest[at..]);
            if seg.is_empty() {
                break;
            }
            at += seg.len();
            path.push(seg);
            if rest[at..].starts_with("::") {
                at += 2;
            } else {
                break;
            }
        }
        if let Some(group) = rest[at..].strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let mut p = path.clone();
                p.extend(
                    item.trim().split("::").map(ident).filter(|s| !s.is_empty() && s != "self"),
                );
                found.extend(resolve(p));
            }
        } else {
            found.extend(resolve(path));
        }
        i += at.max(1);
    }
    // `use child::...` in the file that declares `mod child;`.
    for decl in kept.split("mod ").skip(1) {
        let child = ident(decl);
        if !child.is_empty()
            && decl[child.len()..].trim_start().starts_with(';')
            && kept.contains(&format!("use {child}::"))
        {
            let mut p = me.to_vec();
            p.push(child);
            found.extend(files.get(&p).cloned());
        }
    }
    found
}

#[test]
fn no_import_cycles_between_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.retain(|f| module_of(&src, f).is_some());
    let files: BTreeMap<Vec<String>, String> = paths
        .iter()
        .map(|f| (module_path(&src, f), f.strip_prefix(&src).unwrap().display().to_string()))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &paths {
        let me = module_path(&src, f);
        let name = files[&me].clone();
        let code = code_only(&fs::read_to_string(f).expect("read source"));
        let mut deps = file_imports(&code, &me, &files);
        deps.remove(&name);
        graph.insert(name, deps);
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle among the files of src/: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_file_check_sees_a_cycle_between_siblings() {
    let files: BTreeMap<Vec<String>, String> = [
        (vec!["m".to_owned()], "m/mod.rs".to_owned()),
        (vec!["m".to_owned(), "a".to_owned()], "m/a.rs".to_owned()),
        (vec!["m".to_owned(), "b".to_owned()], "m/b.rs".to_owned()),
    ]
    .into_iter()
    .collect();
    let a = vec!["m".to_owned(), "a".to_owned()];
    let b = vec!["m".to_owned(), "b".to_owned()];
    let m = vec!["m".to_owned()];
    assert_eq!(
        file_imports(&code_only("use super::b::{X, Y};"), &a, &files),
        BTreeSet::from(["m/b.rs".to_owned()])
    );
    assert_eq!(
        file_imports(&code_only("use super::*;\nuse crate::m::a::Z;"), &b, &files),
        BTreeSet::from(["m/mod.rs".to_owned(), "m/a.rs".to_owned()])
    );
    // A re-export is not a dependency; a private use of a child is.
    assert!(file_imports(&code_only("mod a;\npub use a::X;"), &m, &files).is_empty());
    assert_eq!(
        file_imports(&code_only("mod a;\nuse a::X;"), &m, &files),
        BTreeSet::from(["m/a.rs".to_owned()])
    );
    let mut g = BTreeMap::new();
    g.insert("m/a.rs".to_owned(), BTreeSet::from(["m/b.rs".to_owned()]));
    g.insert("m/b.rs".to_owned(), BTreeSet::from(["m/a.rs".to_owned()]));
    assert!(find_cycle(&g).is_some());
}

#[test]
fn the_check_sees_cycles_and_upward_imports() {
    let modules: BTreeSet<String> = ["store", "fs"].iter().map(|s| s.to_string()).collect();
    let exports = BTreeMap::from([("Store".to_owned(), "store".to_owned())]);
    // A doc link or a string is not an import; code is, in both forms.
    let code = code_only(
        "/// [`Store`](crate::Store)\nlet s = \"crate::store\";\nuse crate::{fs::Fs, Store};\n",
    );
    assert_eq!(imports(&code, &exports, &modules), modules);
    let mut g = BTreeMap::new();
    g.insert("fs".to_owned(), BTreeSet::from(["store".to_owned()]));
    g.insert("store".to_owned(), BTreeSet::from(["fs".to_owned()]));
    assert!(find_cycle(&g).is_some());
    g.get_mut("fs").map(BTreeSet::clear);
    assert!(find_cycle(&g).is_none());
}

//! No import cycles between the modules (source files) of any crate in this workspace.
//!
//! Why: ARCHITECTURE.md draws the code as layers (`net` → `api` → domain facades → actor
//! shells → pure state and `geo`, with `persist` underneath) and states what may depend on
//! what. Once two files import from each other, neither can be understood, tested, moved to
//! another crate or replaced without the other, and "layer" stops meaning anything: every
//! file of a cycle is in effect one module. The compiler accepts cycles inside a crate, so
//! this test is what keeps them out.
//!
//! The model: one node per source file of a crate (the root crate's `src/` and every
//! `crates/*/src/`, each checked on its own). File A has an edge to file B when A names an
//! item of B by `use crate::…`, `use super::…`, `use self::…`, a bare `use child::…` of its
//! own child module, or a `crate::…` / `super::…` / `self::…` path in code. A path resolves
//! to the deepest module *file* that exists (`crate::actors::race::state::RaceState` →
//! `src/actors/race/state.rs`); a name that a parent module only re-exports (`pub use
//! x::Y`) resolves to the file that defines it, and such re-exports in a `mod.rs` (or
//! `foo.rs` beside a `foo/` folder) are namespace lines, not dependencies of that file.
//! Not counted: comments (doc links), strings, `#[cfg(test)] mod …` blocks and test-only
//! module files, paths into other crates, and a file naming itself.
//!
//! How to read a failure: each strongly connected component (Tarjan) is printed as one
//! cycle with its files, then every edge inside it as
//! `from.rs -> to.rs: Name (line), Other (line)`, the lines being where `from.rs` names
//! them. Break the cycle by moving what both sides share (message enums, small types) into
//! a file both can import one way, or by inverting one dependency (pass a value or a
//! closure in instead of importing the caller).
//!
//! `MODULE_CYCLES_ROOT=/some/checkout cargo test --test module_cycles` checks another tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A module path inside one crate, from its root (`["actors", "race", "state"]`).
type ModPath = Vec<String>;

/// Where a `use` binding points: a module path (plus item) inside this crate, or outside it.
#[derive(Debug, Clone)]
enum Target {
    /// A path from the crate root.
    Internal(ModPath),
    /// Another crate (std, a dependency, a workspace sibling): never an edge.
    External,
}

/// One name a `use` statement binds (or a glob it opens).
#[derive(Debug, Clone)]
struct UseItem {
    /// The name it binds in the file (`"*"` for a glob).
    binding: String,
    /// What it points at.
    target: Target,
    /// `pub`/`pub(crate)`/`pub(super)`: a re-export, which a namespace file does not depend on.
    public: bool,
    /// 1-based line of the statement, for the report.
    line: usize,
}

/// One parsed source file.
#[derive(Debug)]
struct FileInfo {
    /// `lib.rs`, `main.rs`, `mod.rs`, or `foo.rs` beside a `foo/` folder.
    namespace: bool,
    /// Names of the items the file defines itself (not through `use`).
    defined: BTreeSet<String>,
    /// Every `use` binding of the file.
    uses: Vec<UseItem>,
    /// Absolute `crate::`/`super::`/`self::` paths written in code, with their line.
    code_paths: Vec<(ModPath, usize)>,
}

/// One crate's module graph.
struct CrateGraph {
    /// Label for the report (the `src` folder relative to the workspace).
    label: String,
    /// Module path → file.
    modules: BTreeMap<ModPath, PathBuf>,
    /// File → parsed contents.
    files: BTreeMap<PathBuf, FileInfo>,
}

/// An edge's evidence: names and the lines that name them.
type Evidence = BTreeMap<String, usize>;

/// A cycle found: the files of one strongly connected component and its inner edges.
#[derive(Debug)]
struct Cycle {
    /// Files of the component, sorted.
    files: Vec<PathBuf>,
    /// Edges between them with the names that tie each.
    edges: Vec<(PathBuf, PathBuf, Evidence)>,
}

// ---------------------------------------------------------------------------------------
// Lexing: blank everything that is not code, keeping byte offsets and line breaks.

/// Replaces comments, string and char literals by spaces (newlines kept), so that
/// doc links and paths in strings never count and brace matching is reliable.
fn blank_non_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in out.iter_mut().take(to).skip(from) {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r')))
            && (i == 0 || !is_ident(b[i - 1]))
            && {
                let s = if c == b'b' { i + 2 } else { i + 1 };
                let mut k = s;
                while b.get(k) == Some(&b'#') {
                    k += 1;
                }
                b.get(k) == Some(&b'"')
            }
        {
            // Raw string: r"…", r#"…"#, br"…".
            let s = if c == b'b' { i + 2 } else { i + 1 };
            let mut k = s;
            while b.get(k) == Some(&b'#') {
                k += 1;
            }
            let hashes = k - s;
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let end = src[k + 1..]
                .find(&closing)
                .map_or(b.len(), |n| k + 1 + n + closing.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\'', '€') or a lifetime ('a): only the former is blanked.
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                blank(&mut out, i, (j + 1).min(b.len()));
                i = j + 1;
            } else if let Some(ch) = src[i + 1..].chars().next() {
                let after = i + 1 + ch.len_utf8();
                if b.get(after) == Some(&b'\'') {
                    blank(&mut out, i, after + 1);
                    i = after + 1;
                } else {
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    // Only ASCII bytes were replaced by spaces, but a blanked multi-byte char leaves no
    // invalid sequence because every byte of it became a space.
    String::from_utf8(out).expect("only whole characters are blanked")
}

/// A token of blanked code: an identifier, `::`, or one punctuation character.
#[derive(Debug, Clone, PartialEq)]
struct Tok {
    /// The token's text.
    text: String,
    /// Byte offset in the file.
    pos: usize,
}

/// Splits blanked code into identifiers, `::` and single punctuation characters.
fn tokenize(code: &str) -> Vec<Tok> {
    let b = code.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push(Tok {
                text: code[s..i].to_string(),
                pos: s,
            });
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            toks.push(Tok {
                text: "::".into(),
                pos: i,
            });
            i += 2;
        } else if c.is_ascii_whitespace() || !c.is_ascii() {
            i += 1;
        } else {
            toks.push(Tok {
                text: (c as char).to_string(),
                pos: i,
            });
            i += 1;
        }
    }
    toks
}

/// 1-based line number of a byte offset.
fn line_of(code: &str, pos: usize) -> usize {
    code.as_bytes()[..pos]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
        + 1
}

/// Index of the token closing the bracket opened at `open` (or the last token).
fn matching_close(toks: &[Tok], open: usize) -> usize {
    let (o, c) = match toks[open].text.as_str() {
        "(" => ("(", ")"),
        "[" => ("[", "]"),
        _ => ("{", "}"),
    };
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.text == o {
            depth += 1;
        } else if t.text == c {
            depth -= 1;
            if depth == 0 {
                return k;
            }
        }
    }
    toks.len() - 1
}

/// Blanks `#[cfg(test)] mod name { … }` blocks and returns the names of
/// `#[cfg(test)] mod name;` children (test-only module files).
fn strip_test_modules(code: &mut String) -> Vec<String> {
    let mut test_children = Vec::new();
    loop {
        let toks = tokenize(code);
        let mut cut = None;
        let mut k = 0;
        while k + 6 < toks.len() {
            let is_cfg_test = toks[k].text == "#"
                && toks[k + 1].text == "["
                && toks[k + 2].text == "cfg"
                && toks[k + 3].text == "("
                && toks[k + 4].text == "test"
                && toks[k + 5].text == ")"
                && toks[k + 6].text == "]";
            if !is_cfg_test {
                k += 1;
                continue;
            }
            // Skip further attributes and a visibility, then expect `mod name`.
            let mut j = k + 7;
            while j < toks.len()
                && toks[j].text == "#"
                && toks.get(j + 1).map(|t| t.text.as_str()) == Some("[")
            {
                j = matching_close(&toks, j + 1) + 1;
            }
            if toks.get(j).map(|t| t.text.as_str()) == Some("pub") {
                j += 1;
                if toks.get(j).map(|t| t.text.as_str()) == Some("(") {
                    j = matching_close(&toks, j) + 1;
                }
            }
            if toks.get(j).map(|t| t.text.as_str()) == Some("mod") && j + 2 < toks.len() {
                let name = toks[j + 1].text.clone();
                match toks[j + 2].text.as_str() {
                    "{" => {
                        let close = matching_close(&toks, j + 2);
                        cut = Some((toks[k].pos, toks[close].pos + 1));
                        break;
                    }
                    ";" => {
                        test_children.push(name);
                        cut = Some((toks[k].pos, toks[j + 2].pos + 1));
                        break;
                    }
                    _ => {}
                }
            }
            k += 1;
        }
        match cut {
            Some((from, to)) => {
                let blanked: String = code[from..to]
                    .chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' })
                    .collect();
                code.replace_range(from..to, &blanked);
            }
            None => return test_children,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing `use` trees and code paths.

/// A raw `use` binding before its path is made absolute.
struct RawUse {
    /// Bound name, or `"*"`.
    binding: String,
    /// Path as written.
    path: Vec<String>,
}

/// A path as written somewhere in a file, with where.
struct Site {
    /// The path.
    path: Vec<String>,
    /// 1-based line.
    line: usize,
    /// Inline modules (`mod m { … }`) around it, outermost first: `self`/`super` start there.
    inline: Vec<String>,
}

/// What one file says, before paths are made absolute.
struct RawFile {
    /// `use` bindings, each with whether it is a re-export and where it is.
    uses: Vec<(String, bool, Site)>,
    /// `crate::`/`super::`/`self::` paths in code.
    paths: Vec<Site>,
}

/// Parses one use tree starting at `toks[*i]`, with `prefix` already read.
fn parse_use_tree(toks: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<RawUse>) {
    let mut segs = prefix;
    if toks.get(*i).map(|t| t.text.as_str()) == Some("::") {
        // `use ::std::…`: always another crate.
        segs.push("::".into());
        *i += 1;
    }
    while let Some(t) = toks.get(*i) {
        match t.text.as_str() {
            "{" => {
                *i += 1;
                while let Some(t) = toks.get(*i) {
                    match t.text.as_str() {
                        "}" => {
                            *i += 1;
                            return;
                        }
                        "," => *i += 1,
                        _ => parse_use_tree(toks, i, segs.clone(), out),
                    }
                }
                return;
            }
            "*" => {
                *i += 1;
                out.push(RawUse {
                    binding: "*".into(),
                    path: segs,
                });
                return;
            }
            _ => {
                segs.push(t.text.clone());
                *i += 1;
                if toks.get(*i).map(|t| t.text.as_str()) == Some("::") {
                    *i += 1;
                    continue;
                }
                let mut alias = None;
                if toks.get(*i).map(|t| t.text.as_str()) == Some("as") {
                    alias = toks.get(*i + 1).map(|t| t.text.clone());
                    *i += 2;
                }
                if segs.last().map(String::as_str) == Some("self") {
                    segs.pop();
                }
                let binding = alias.or_else(|| segs.last().cloned()).unwrap_or_default();
                out.push(RawUse {
                    binding,
                    path: segs,
                });
                return;
            }
        }
    }
}

/// Whether the `use` at `toks[use_at]` has a `pub`/`pub(…)` visibility (a re-export).
fn is_public_before(toks: &[Tok], use_at: usize) -> bool {
    if use_at == 0 {
        return false;
    }
    let prev = &toks[use_at - 1];
    if prev.text == "pub" {
        return true;
    }
    if prev.text == ")" {
        // pub(crate) / pub(super) / pub(in path)
        let mut k = use_at - 1;
        while k > 0 && toks[k].text != "(" {
            k -= 1;
        }
        return k > 0 && toks[k - 1].text == "pub";
    }
    false
}

/// Parses one file's blanked code into `use` bindings and code paths (still relative).
fn parse_file(code: &str) -> RawFile {
    let toks = tokenize(code);
    // Inline modules as token ranges, outermost first.
    let mut inline_mods = Vec::new();
    for k in 0..toks.len().saturating_sub(2) {
        if toks[k].text == "mod" && toks[k + 2].text == "{" {
            inline_mods.push((toks[k + 1].text.clone(), k, matching_close(&toks, k + 2)));
        }
    }
    let inline_at = |k: usize| -> Vec<String> {
        inline_mods
            .iter()
            .filter(|(_, open, close)| *open < k && k < *close)
            .map(|(name, ..)| name.clone())
            .collect()
    };
    let mut uses = Vec::new();
    let mut in_use = vec![false; toks.len()];
    let mut k = 0;
    while k < toks.len() {
        let starts_stmt = k == 0
            || matches!(
                toks[k - 1].text.as_str(),
                ";" | "{" | "}" | "]" | ")" | "pub"
            );
        if toks[k].text == "use" && starts_stmt {
            let public = is_public_before(&toks, k);
            let line = line_of(code, toks[k].pos);
            let mut i = k + 1;
            let mut raw = Vec::new();
            parse_use_tree(&toks, &mut i, Vec::new(), &mut raw);
            while i < toks.len() && toks[i].text != ";" {
                i += 1;
            }
            for flag in in_use.iter_mut().take(i.min(toks.len() - 1) + 1).skip(k) {
                *flag = true;
            }
            let inline = inline_at(k);
            uses.extend(raw.into_iter().map(|r| {
                let site = Site {
                    path: r.path,
                    line,
                    inline: inline.clone(),
                };
                (r.binding, public, site)
            }));
            k = i + 1;
        } else {
            k += 1;
        }
    }
    let mut paths = Vec::new();
    let mut k = 0;
    while k + 1 < toks.len() {
        let t = &toks[k];
        let head = matches!(t.text.as_str(), "crate" | "self" | "super");
        let prev = if k > 0 { toks[k - 1].text.as_str() } else { "" };
        if !in_use[k] && head && toks[k + 1].text == "::" && !matches!(prev, "::" | "$" | "in") {
            let mut segs = vec![t.text.clone()];
            let mut j = k + 1;
            while j + 1 < toks.len()
                && toks[j].text == "::"
                && toks[j + 1]
                    .text
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                segs.push(toks[j + 1].text.clone());
                j += 2;
            }
            paths.push(Site {
                path: segs,
                line: line_of(code, t.pos),
                inline: inline_at(k),
            });
            k = j;
        } else {
            k += 1;
        }
    }
    RawFile { uses, paths }
}

// ---------------------------------------------------------------------------------------
// Building and resolving one crate.

/// The module path of a source file relative to its `src` folder.
fn modpath_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return Vec::new();
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Makes a written path absolute from module `ctx`, or says it leaves the crate.
fn absolutize(modules: &BTreeMap<ModPath, PathBuf>, ctx: &ModPath, path: &[String]) -> Target {
    let Some(first) = path.first() else {
        return Target::External;
    };
    match first.as_str() {
        "crate" => Target::Internal(path[1..].to_vec()),
        "self" => {
            let mut p = ctx.clone();
            p.extend_from_slice(&path[1..]);
            Target::Internal(p)
        }
        "super" => {
            let mut p = ctx.clone();
            let mut k = 0;
            while path.get(k).map(String::as_str) == Some("super") {
                p.pop();
                k += 1;
            }
            p.extend_from_slice(&path[k..]);
            Target::Internal(p)
        }
        _ => {
            // 2018 uniform paths: a bare name of a child module file is relative.
            let mut p = ctx.clone();
            p.push(first.clone());
            if modules.contains_key(&p) {
                p.extend_from_slice(&path[1..]);
                Target::Internal(p)
            } else {
                Target::External
            }
        }
    }
}

/// The names of the items blanked code defines.
fn definitions(code: &str) -> BTreeSet<String> {
    let toks = tokenize(code);
    let items = toks.windows(2).filter(|w| {
        matches!(
            w[0].text.as_str(),
            "struct" | "enum" | "fn" | "const" | "static" | "type" | "trait" | "mod" | "union"
        )
    });
    let macros = toks
        .windows(3)
        .filter(|w| w[0].text == "macro_rules" && w[1].text == "!");
    items
        .map(|w| w[1].text.clone())
        .chain(macros.map(|w| w[2].text.clone()))
        .collect()
}

impl CrateGraph {
    /// Reads and parses every module file of the crate whose sources are in `src`.
    fn load(workspace: &Path, src: &Path) -> CrateGraph {
        let mut all = Vec::new();
        rust_files(src, &mut all);
        all.sort();
        let has_lib = src.join("lib.rs").exists();
        let mut modules = BTreeMap::new();
        let mut raw = BTreeMap::new();
        for path in all {
            let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
            // With a library, `main.rs` and `bin/` are other crates that only reach the
            // library by its name.
            if has_lib && (rel == Path::new("main.rs") || rel.starts_with("bin")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut code = blank_non_code(&text);
            let test_children = strip_test_modules(&mut code);
            let modpath = modpath_of(&rel);
            let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
            let namespace = matches!(name.as_deref(), Some("lib.rs" | "main.rs" | "mod.rs"))
                || path.with_extension("").is_dir();
            modules.insert(modpath.clone(), path.clone());
            raw.insert(path, (modpath, namespace, code, test_children));
        }
        // Drop test-only module files and everything under them.
        let mut test_only: Vec<ModPath> = Vec::new();
        for (modpath, _, _, children) in raw.values() {
            for c in children {
                let mut p = modpath.clone();
                p.push(c.clone());
                test_only.push(p);
            }
        }
        modules.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
        raw.retain(|_, (m, ..)| !test_only.iter().any(|t| m.starts_with(t)));

        let mut files = BTreeMap::new();
        for (path, (modpath, namespace, code, _)) in raw {
            let RawFile {
                uses: raw_uses,
                paths: raw_paths,
            } = parse_file(&code);
            let context = |site: &Site| {
                let mut ctx = modpath.clone();
                ctx.extend(site.inline.iter().cloned());
                ctx
            };
            let uses = raw_uses
                .into_iter()
                .map(|(binding, public, site)| UseItem {
                    binding,
                    target: absolutize(&modules, &context(&site), &site.path),
                    public,
                    line: site.line,
                })
                .collect();
            let code_paths = raw_paths
                .into_iter()
                .filter_map(
                    |site| match absolutize(&modules, &context(&site), &site.path) {
                        Target::Internal(abs) => Some((abs, site.line)),
                        Target::External => None,
                    },
                )
                .collect();
            files.insert(
                path,
                FileInfo {
                    namespace,
                    defined: definitions(&code),
                    uses,
                    code_paths,
                },
            );
        }
        let label = src
            .strip_prefix(workspace)
            .unwrap_or(src)
            .display()
            .to_string();
        CrateGraph {
            label,
            modules,
            files,
        }
    }

    /// The file that defines what an absolute path names, and the name; `None` when it
    /// leads out of the crate.
    fn resolve(&self, path: &[String], depth: usize) -> Option<(PathBuf, String)> {
        let mut cur: ModPath = Vec::new();
        let mut i = 0;
        while i < path.len() {
            let mut next = cur.clone();
            next.push(path[i].clone());
            if !self.modules.contains_key(&next) {
                break;
            }
            cur = next;
            i += 1;
        }
        let file = self.modules.get(&cur)?.clone();
        if i == path.len() {
            let name = path.last().cloned().unwrap_or_else(|| "crate".into());
            return Some((file, name));
        }
        let name = path[i].clone();
        let info = &self.files[&file];
        if depth > 16 {
            return Some((file, name));
        }
        if let Some(u) = info.uses.iter().find(|u| u.binding == name) {
            return match &u.target {
                Target::External => None,
                Target::Internal(t) => {
                    let mut p = t.clone();
                    p.extend_from_slice(&path[i + 1..]);
                    self.resolve(&p, depth + 1)
                }
            };
        }
        if !info.defined.contains(&name) {
            let mut external_glob = false;
            for u in info.uses.iter().filter(|u| u.binding == "*") {
                match &u.target {
                    Target::External => external_glob = true,
                    Target::Internal(g) => {
                        let mut p = g.clone();
                        p.extend_from_slice(&path[i..]);
                        if let Some((f, n)) = self.resolve(&p, depth + 1) {
                            if f != file && self.files[&f].defined.contains(&n) {
                                return Some((f, n));
                            }
                        }
                    }
                }
            }
            if external_glob {
                return None;
            }
        }
        Some((file, name))
    }

    /// Every edge between distinct files, with the names that make it.
    fn edges(&self) -> BTreeMap<(PathBuf, PathBuf), Evidence> {
        let mut edges: BTreeMap<(PathBuf, PathBuf), Evidence> = BTreeMap::new();
        let mut add = |from: &PathBuf, target: Option<(PathBuf, String)>, line: usize| {
            if let Some((to, name)) = target {
                if &to != from {
                    edges
                        .entry((from.clone(), to))
                        .or_default()
                        .entry(name)
                        .or_insert(line);
                }
            }
        };
        for (path, info) in &self.files {
            for u in &info.uses {
                // A namespace's re-exports are how others reach its children, not its needs.
                if u.public && info.namespace {
                    continue;
                }
                if let Target::Internal(t) = &u.target {
                    let resolved = self.resolve(t, 0);
                    let resolved = if u.binding == "*" {
                        resolved.map(|(f, _)| (f, "*".to_string()))
                    } else {
                        resolved
                    };
                    add(path, resolved, u.line);
                }
            }
            for (p, line) in &info.code_paths {
                add(path, self.resolve(p, 0), *line);
            }
        }
        edges
    }

    /// The cycles of this crate: strongly connected components of more than one file.
    fn cycles(&self) -> Vec<Cycle> {
        let edges = self.edges();
        let nodes: Vec<PathBuf> = self.files.keys().cloned().collect();
        let index: BTreeMap<&PathBuf, usize> =
            nodes.iter().enumerate().map(|(i, p)| (p, i)).collect();
        let mut adj = vec![Vec::new(); nodes.len()];
        for (from, to) in edges.keys() {
            if let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) {
                adj[a].push(b);
            }
        }
        let mut out = Vec::new();
        for comp in tarjan(&adj) {
            if comp.len() < 2 {
                continue;
            }
            let set: BTreeSet<&PathBuf> = comp.iter().map(|&i| &nodes[i]).collect();
            let files: Vec<PathBuf> = set.iter().map(|p| (*p).clone()).collect();
            let inner = edges
                .iter()
                .filter(|((a, b), _)| set.contains(a) && set.contains(b))
                .map(|((a, b), ev)| (a.clone(), b.clone(), ev.clone()))
                .collect();
            out.push(Cycle {
                files,
                edges: inner,
            });
        }
        out.sort_by(|a, b| a.files.cmp(&b.files));
        out
    }
}

/// Tarjan's strongly connected components over an adjacency list.
fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    /// The algorithm's bookkeeping, kept together for the recursion.
    struct State<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        comps: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for k in 0..s.adj[v].len() {
            let w = s.adj[v][k];
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.comps.push(comp);
        }
    }
    let n = adj.len();
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        comps: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.comps
}

/// The `src` folders of the root crate and every `crates/*` member that exists.
fn crate_sources(workspace: &Path) -> Vec<PathBuf> {
    let mut srcs = Vec::new();
    if workspace.join("src").is_dir() {
        srcs.push(workspace.join("src"));
    }
    if let Ok(entries) = std::fs::read_dir(workspace.join("crates")) {
        let mut members: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("src"))
            .filter(|p| p.is_dir())
            .collect();
        members.sort();
        srcs.extend(members);
    }
    srcs
}

/// Human-readable report of the cycles of all crates under `workspace`; empty if none.
fn report(workspace: &Path) -> String {
    let rel = |p: &Path| p.strip_prefix(workspace).unwrap_or(p).display().to_string();
    let mut out = String::new();
    let mut n = 0;
    for src in crate_sources(workspace) {
        let graph = CrateGraph::load(workspace, &src);
        for cycle in graph.cycles() {
            n += 1;
            let _ = writeln!(
                out,
                "cycle {n} in {} ({} files): {}",
                graph.label,
                cycle.files.len(),
                cycle
                    .files
                    .iter()
                    .map(|f| rel(f))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (a, b, ev) in &cycle.edges {
                let names: Vec<String> = ev.iter().map(|(n, l)| format!("{n} ({l})")).collect();
                let _ = writeln!(out, "    {} -> {}: {}", rel(a), rel(b), names.join(", "));
            }
        }
    }
    if n > 0 {
        out.insert_str(
            0,
            &format!(
                "{n} import cycle(s) between modules (edge: file that imports -> file that \
                 defines: names (line in the importing file)):\n"
            ),
        );
    }
    out
}

#[test]
fn no_import_cycles_between_modules() {
    let workspace = std::env::var_os("MODULE_CYCLES_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let report = report(&workspace);
    assert!(report.is_empty(), "{report}");
}

#[test]
fn the_check_sees_a_cycle_and_not_a_reexport_or_test_or_comment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "src/lib.rs",
        "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\npub mod ns;\n",
    );
    // A real cycle: a uses b in a `use`, b uses a by a path in code.
    write("src/a.rs", "use crate::b::B;\npub struct A(pub B);\n");
    write(
        "src/b.rs",
        "pub struct B;\npub fn f() -> Option<super::a::A> { None }\n",
    );
    // The namespace re-exports its child: not an edge ns -> inner, and c's import of
    // `crate::ns::Thing` is an edge to inner.rs, so inner <-> c is a cycle and ns is not in it.
    write(
        "src/ns/mod.rs",
        "pub mod inner;\npub use self::inner::Thing;\npub const KIND: &str = \"ns\";\n",
    );
    write(
        "src/ns/inner.rs",
        "pub struct Thing;\npub fn k() -> &'static str { super::KIND }\npub fn c() { crate::c::C::go() }\n",
    );
    write(
        "src/c.rs",
        "use crate::ns::Thing;\npub struct C;\nimpl C { pub fn go() { let _ = Thing; } }\n",
    );
    // Doc links, strings and test modules never count: d <-> e is not a cycle.
    write(
        "src/d.rs",
        "/// See [`crate::e::E`].\npub struct D;\npub const S: &str = \"crate::e::E\";\n\
         #[cfg(test)]\nmod tests {\n    use crate::e::E;\n    #[test]\n    fn t() { let _ = E; }\n}\n",
    );
    write("src/e.rs", "pub struct E(pub crate::d::D);\n");

    let report = report(root);
    let graph = CrateGraph::load(root, &root.join("src"));
    let cycles: Vec<Vec<String>> = graph
        .cycles()
        .iter()
        .map(|c| {
            c.files
                .iter()
                .map(|f| f.strip_prefix(root).unwrap().display().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        cycles,
        vec![
            vec!["src/a.rs".to_string(), "src/b.rs".to_string()],
            vec!["src/c.rs".to_string(), "src/ns/inner.rs".to_string()],
        ],
        "{report}"
    );
    assert!(report.contains("src/a.rs -> src/b.rs: B (1)"), "{report}");
    assert!(report.contains("src/b.rs -> src/a.rs: A (2)"), "{report}");
    assert!(
        report.contains("src/c.rs -> src/ns/inner.rs: Thing (1)"),
        "{report}"
    );
    assert!(!report.contains("src/ns/mod.rs ->"), "{report}");
}

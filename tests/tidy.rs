//! Tidy checks on the repository itself, as rust-analyzer's `xtask tidy`: every Rust module
//! opens with a `//!` line, and every crate and top-level folder has an entry in
//! `ARCHITECTURE.md`'s code map.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The folders of a crate that hold its Rust modules.
const SOURCE_DIRS: [&str; 5] = ["src", "tests", "benches", "examples", "fuzz_targets"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The quoted strings of the array `key = [...]` in the `[workspace]` table of the root
/// manifest. A small reader suffices for the root manifest, and keeps `toml` out of the
/// dependencies.
fn workspace_list(manifest: &str, key: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut in_list = false;
    let mut list = String::new();
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') && !in_list {
            in_workspace = line == "[workspace]";
            continue;
        }
        if !in_workspace {
            continue;
        }
        if !in_list {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if name.trim() != key {
                continue;
            }
            in_list = true;
            list.push_str(value);
        } else {
            list.push_str(line);
        }
        if list.contains(']') {
            break;
        }
    }
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The folders, relative to the root, of the workspace's member crates and of the crates kept
/// out of it (`exclude`, like `fuzz`), which are built on their own but are still ours. The root
/// package itself is checked through its folders (`src/`, `tests/`, `benches/`).
fn crate_dirs() -> Vec<String> {
    let manifest = read(&root().join("Cargo.toml"));
    let members = workspace_list(&manifest, "members");
    assert!(
        !members.is_empty(),
        "found no `members` in the [workspace] table of Cargo.toml"
    );
    for member in &members {
        assert!(
            !member.contains(['*', '?', '[']),
            "workspace member `{member}` is a glob; tidy reads only literal members"
        );
    }
    let excluded = workspace_list(&manifest, "exclude")
        .into_iter()
        .filter(|dir| root().join(dir).join("Cargo.toml").is_file());
    members.into_iter().chain(excluded).collect()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, files);
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// Whether the first line that is not blank is a `//!` line.
fn opens_with_module_doc(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with("//!"))
}

#[test]
fn every_rust_module_opens_with_a_doc_line() {
    let mut files = Vec::new();
    let crates = std::iter::once(String::from(".")).chain(crate_dirs());
    for dir in crates {
        for sources in SOURCE_DIRS {
            let path = root().join(&dir).join(sources);
            if path.is_dir() {
                rust_files(&path, &mut files);
            }
        }
    }
    let scanned: BTreeSet<String> = files.iter().map(|path| relative(path)).collect();
    // A wrong root or source list would make this test pass on nothing.
    for expected in [
        "protocol/src/lib.rs",
        "gateway/src/lib.rs",
        "kernel-runner/src/lib.rs",
        "src/main.rs",
        "tests/tidy.rs",
        "tests/support/mod.rs",
    ] {
        assert!(
            scanned.contains(expected),
            "tidy did not look at {expected}"
        );
    }
    assert!(
        scanned.iter().any(|path| path.starts_with("fuzz/")),
        "tidy did not look at the fuzz targets"
    );
    let missing: Vec<String> = files
        .iter()
        .filter(|path| !opens_with_module_doc(&read(path)))
        .map(|path| format!("  {}", relative(path)))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line saying what the module is for:\n{}",
        missing.join("\n")
    );
}

/// The names each entry of the code map is about: the backquoted names an entry (a `- ` line
/// and its indented continuation) opens with, such as `gateway/` in "- `gateway/`: the TLS
/// edge", or both in "- `a/` and `b/`: ...". A trailing `/` is dropped.
fn code_map_entries(architecture: &str) -> Vec<Vec<String>> {
    let section = architecture
        .split("\n## ")
        .find(|section| section.starts_with("Code map"))
        .expect("ARCHITECTURE.md has a `## Code map` section");
    let mut entries = Vec::new();
    for line in section.lines() {
        let Some(entry) = line.strip_prefix("- ") else {
            continue;
        };
        let mut names = Vec::new();
        let mut rest = entry.trim_start();
        while let Some(quoted) = rest.strip_prefix('`') {
            let Some((name, after)) = quoted.split_once('`') else {
                break;
            };
            names.push(name.trim_end_matches('/').to_owned());
            rest = after;
            match [", ", " and ", "/"].iter().find_map(|sep| {
                rest.strip_prefix(sep)
                    .filter(|after| after.starts_with('`'))
            }) {
                Some(after) => rest = after,
                None => break,
            }
        }
        entries.push(names);
    }
    entries
}

/// Top-level folder names the root `.gitignore` ignores, such as `target` or `bench-results`.
fn ignored_folders() -> BTreeSet<String> {
    let Ok(ignore) = fs::read_to_string(root().join(".gitignore")) else {
        return BTreeSet::new();
    };
    ignore
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_suffix('/'))
        .map(|line| line.strip_prefix('/').unwrap_or(line))
        .filter(|name| !name.is_empty() && !name.contains(['/', '*']))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_crate_and_top_level_folder_has_a_code_map_entry() {
    let entries = code_map_entries(&read(&root().join("ARCHITECTURE.md")));
    let named: BTreeSet<&str> = entries.iter().flatten().map(String::as_str).collect();
    let ignored = ignored_folders();
    let mut wanted: Vec<(String, &str)> = crate_dirs()
        .into_iter()
        .map(|dir| (dir.trim_end_matches('/').to_owned(), "crate"))
        .collect();
    let folders = fs::read_dir(root()).expect("the repository root can be listed");
    for entry in folders {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() || name.starts_with('.') || name == "target" {
            continue;
        }
        if ignored.contains(&name) {
            continue;
        }
        if !wanted.iter().any(|(known, _)| *known == name) {
            wanted.push((name, "top-level folder"));
        }
    }
    assert!(
        wanted.iter().any(|(name, _)| name == "src"),
        "tidy did not see the top-level folders"
    );
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !named.contains(name.as_str()))
        .map(|(name, what)| format!("  {what} `{name}/`"))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map has no entry opening with these (add one, \
         \"- `NAME/`: what it is\", one per crate and folder):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readers_take_what_the_manifest_and_the_code_map_say() {
    let manifest = "[package]\nmembers = [\"no\"]\n\n[workspace]\nmembers = [\n    \"a\", # first\n    \"b/c\",\n]\nexclude = [\"fuzz\"]\n\n[workspace.package]\nexclude = [\"no\"]\n";
    assert_eq!(workspace_list(manifest, "members"), ["a", "b/c"]);
    assert_eq!(workspace_list(manifest, "exclude"), ["fuzz"]);
    let architecture = "# A\n\n## Code map\n- `gateway/`: the edge, with `cli/` inside.\n  `nested/` (a continuation)\n- `nginx/` and `gluster/`: two folders.\n- `x.yml` (a file), `swarm/` (named late)\n- Service images: `images/gateway`\n\n## Invariants\n- `invariant/`\n";
    assert_eq!(
        code_map_entries(architecture),
        [
            vec!["gateway".to_owned()],
            vec!["nginx".to_owned(), "gluster".to_owned()],
            vec!["x.yml".to_owned()],
            vec![],
        ]
    );
}

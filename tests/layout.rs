//! The module graph reads top-down: no module depends, through any chain of
//! `use crate::...`, on a module that depends on it. Checked with the same
//! script the architecture notes quote (`scripts/module-graph.py`), at the
//! depth of top-level modules and one level below.

use std::process::Command;

fn graph(depth: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args([&format!("{root}/scripts/module-graph.py"), "--depth", depth])
        .arg(format!("{root}/src"))
        .output()
        .expect("python3 runs scripts/module-graph.py");
    assert!(
        out.status.success(),
        "module-graph.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_module_graph_has_no_cycles() {
    for depth in ["1", "2"] {
        let text = graph(depth);
        let summary = text.lines().last().unwrap_or_default();
        assert!(
            summary.ends_with(", 0 cycles"),
            "depth {depth}: {summary}\n{}",
            text.lines()
                .filter(|l| l.starts_with("cycle:"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The count is read from a line that exists.
        assert!(summary.contains(" modules, "), "{summary}");
    }
}

//! Damaged input never panics, and every error it produces points at a line and column.

use zlayer_spec::parse_str;

const DEMO: &str = include_str!("../../../examples/demo.yaml");

fn check(src: &str) {
    if let Err(errors) = parse_str(src, "t.yaml") {
        assert!(!errors.is_empty());
        for e in errors.errors() {
            let loc = e
                .location
                .unwrap_or_else(|| panic!("error without a location: {e}\n--- input:\n{src}"));
            let lines = src.lines().count().max(1);
            assert!(
                loc.line >= 1 && loc.line <= lines + 1,
                "line {} out of range for:\n{src}",
                loc.line
            );
            assert!(e.to_string().starts_with("t.yaml:"), "{e}");
        }
    }
}

#[test]
fn every_prefix_of_the_demo() {
    for (i, _) in DEMO.char_indices() {
        check(&DEMO[..i]);
    }
}

#[test]
fn every_line_removed_or_duplicated() {
    let lines: Vec<&str> = DEMO.lines().collect();
    for i in 0..lines.len() {
        let mut removed = lines.clone();
        removed.remove(i);
        check(&removed.join("\n"));
        let mut doubled = lines.clone();
        doubled.insert(i, lines[i]);
        check(&doubled.join("\n"));
    }
}

#[test]
fn single_character_damage() {
    // Deterministic sample of positions and replacement characters.
    let replacements = [
        ':', '-', ' ', '{', '[', '"', '\'', '&', '*', '!', '#', '\t', 'x', '9',
    ];
    let chars: Vec<char> = DEMO.chars().collect();
    for (n, pos) in (0..chars.len()).step_by(7).enumerate() {
        let mut damaged = chars.clone();
        damaged[pos] = replacements[n % replacements.len()];
        check(&damaged.iter().collect::<String>());
    }
}

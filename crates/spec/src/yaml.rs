//! A YAML document as a tree whose every node knows its line and column.
//!
//! Why not `serde_yaml`/`serde-saphyr` straight into the types: serde stops at the first error and
//! forgets positions once a value is built, but we must report *every* problem (including semantic
//! ones found later, like a dependency cycle) at its exact line and column. So we build this small
//! spanned tree from `saphyr-parser`'s event stream (a maintained pure-Rust YAML 1.2 parser that
//! reports a position with every event), decode the tree by hand in [`crate::decode`] while
//! recording a path -> position map, and validate with that map.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{Location, Sink};

/// A node of the YAML tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: Value,
    /// Where it starts in the source.
    pub loc: Location,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or an empty value.
    Null,
    /// Any scalar. `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        /// The scalar's text after YAML unescaping.
        text: String,
        /// Whether it was written unquoted (and so may be a number or a boolean).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in source order (duplicates are rejected while building).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short word for the node's kind, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Scalar { text, .. } => format!("`{text}`"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }

    /// The text of a scalar key, or `None` for a non-scalar node.
    pub fn as_key(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Upper bound on nodes, so an alias bomb ("billion laughs") cannot exhaust memory.
const MAX_NODES: usize = 200_000;

fn loc(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

/// A syntax-level problem, reported with its position.
struct BuildError(Location, String);

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), BuildError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                Err(BuildError(
                    Location {
                        line: m.line(),
                        col: m.col() + 1,
                    },
                    format!("YAML syntax error: {}", e.info()),
                ))
            }
            None => Err(BuildError(
                Location { line: 1, col: 1 },
                "unexpected end of YAML input".to_owned(),
            )),
        }
    }

    fn count(&mut self, at: Location, n: usize) -> Result<(), BuildError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(BuildError(
                at,
                format!("document too large (more than {MAX_NODES} nodes after expanding aliases)"),
            ));
        }
        Ok(())
    }

    /// Builds the node that starts with `ev`.
    fn node(&mut self, ev: Event<'a>, span: Span) -> Result<Node, BuildError> {
        let at = loc(&span);
        self.count(at, 1)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                let value = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                (Node { value, loc: at }, anchor)
            }
            Event::SequenceStart(anchor, _tag) => (self.sequence(at)?, anchor),
            Event::MappingStart(anchor, _tag) => (self.mapping(at)?, anchor),
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id).cloned() else {
                    return Err(BuildError(
                        at,
                        "alias refers to an unknown anchor".to_owned(),
                    ));
                };
                self.count(at, size(&target))?;
                return Ok(Node { loc: at, ..target });
            }
            other => return Err(BuildError(at, format!("unexpected YAML event {other:?}"))),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// The items of a sequence whose start event was read, up to its end.
    fn sequence(&mut self, at: Location) -> Result<Node, BuildError> {
        let mut items = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            if ev == Event::SequenceEnd {
                break;
            }
            items.push(self.node(ev, span)?);
        }
        Ok(Node {
            value: Value::Seq(items),
            loc: at,
        })
    }

    /// The entries of a mapping whose start event was read, up to its end, with merge keys
    /// applied; duplicate and non-string keys are errors.
    fn mapping(&mut self, at: Location) -> Result<Node, BuildError> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut merges = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            if ev == Event::MappingEnd {
                break;
            }
            let key = self.map_key(ev, span)?;
            let (ev, span) = self.next()?;
            let value = self.node(ev, span)?;
            if key.as_key().is_none() {
                return Err(BuildError(
                    key.loc,
                    format!(
                        "mapping keys must be plain strings, found {}",
                        key.kind_name()
                    ),
                ));
            }
            if matches!(&key.value, Value::Scalar { text, plain: true } if text == "<<") {
                merges.push(value);
                continue;
            }
            if let Some((first, _)) = entries.iter().find(|(k, _)| k.as_key() == key.as_key()) {
                return Err(BuildError(
                    key.loc,
                    format!(
                        "duplicate key `{}` (first defined at line {})",
                        key.as_key().unwrap_or_default(),
                        first.loc.line
                    ),
                ));
            }
            entries.push((key, value));
        }
        for merge in merges {
            merge_into(&mut entries, merge)?;
        }
        Ok(Node {
            value: Value::Map(entries),
            loc: at,
        })
    }

    /// A mapping key that starts with `ev`. Keys are names: `null:` or `~:` is the string, not
    /// a null.
    fn map_key(&mut self, ev: Event<'a>, span: Span) -> Result<Node, BuildError> {
        Ok(match ev {
            Event::Scalar(text, style, _, _) => {
                self.count(loc(&span), 1)?;
                let value = Value::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                };
                Node {
                    value,
                    loc: loc(&span),
                }
            }
            ev => self.node(ev, span)?,
        })
    }
}

/// YAML merge keys (`<<: *defaults`): keys written explicitly in the mapping win.
fn merge_into(entries: &mut Vec<(Node, Node)>, merge: Node) -> Result<(), BuildError> {
    match merge.value {
        Value::Map(src) => {
            for (k, v) in src {
                if !entries.iter().any(|(e, _)| e.as_key() == k.as_key()) {
                    entries.push((k, v));
                }
            }
            Ok(())
        }
        Value::Seq(items) => items.into_iter().try_for_each(|m| merge_into(entries, m)),
        _ => Err(BuildError(
            merge.loc,
            format!(
                "`<<` merge needs a mapping or a list of mappings, found {}",
                merge.kind_name()
            ),
        )),
    }
}

fn size(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size(k) + size(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Parses a single YAML document into a spanned tree. An empty document yields `None` (the
/// caller decides whether that is an error). Syntax errors go to `sink` with their position.
pub(crate) fn parse(src: &str, sink: &mut Sink) -> Option<Node> {
    let mut b = Builder {
        parser: Parser::new_from_str(src),
        anchors: HashMap::new(),
        nodes: 0,
    };
    match build_document(&mut b) {
        Ok(node) => node,
        Err(BuildError(loc, msg)) => {
            sink.push(Some(loc), "", msg);
            None
        }
    }
}

fn build_document(b: &mut Builder<'_>) -> Result<Option<Node>, BuildError> {
    let mut root = None;
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(root),
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(BuildError(
                        loc(&span),
                        "only one YAML document is allowed per spec file".to_owned(),
                    ));
                }
                let (ev, span) = b.next()?;
                if ev == Event::DocumentEnd {
                    continue;
                }
                let node = b.node(ev, span)?;
                root = Some(node);
            }
            other => {
                return Err(BuildError(
                    loc(&span),
                    format!("unexpected YAML event {other:?}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::SpecErrors;

    fn tree(src: &str) -> Result<Option<Node>, SpecErrors> {
        let mut sink = Sink::new(Some("t.yaml"));
        let n = parse(src, &mut sink);
        if sink.errors.is_empty() {
            Ok(n)
        } else {
            Err(SpecErrors(sink.errors))
        }
    }

    fn map(n: &Node) -> &Vec<(Node, Node)> {
        match &n.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let n = tree("a: 1\nb:\n  c: hello\n").unwrap().unwrap();
        let m = map(&n);
        assert_eq!(m[0].0.loc, Location { line: 1, col: 1 });
        assert_eq!(m[0].1.loc, Location { line: 1, col: 4 });
        let inner = map(&m[1].1);
        assert_eq!(inner[0].0.loc, Location { line: 3, col: 3 });
        assert_eq!(inner[0].1.loc, Location { line: 3, col: 6 });
        assert_eq!(
            inner[0].1.value,
            Value::Scalar {
                text: "hello".into(),
                plain: true
            }
        );
    }

    #[test]
    fn nulls_and_quoted() {
        let n = tree("a:\nb: ~\nc: \"null\"\nd: 'x'\n").unwrap().unwrap();
        let m = map(&n);
        assert_eq!(m[0].1.value, Value::Null);
        assert_eq!(m[1].1.value, Value::Null);
        assert_eq!(
            m[2].1.value,
            Value::Scalar {
                text: "null".into(),
                plain: false
            }
        );
        assert_eq!(
            m[3].1.value,
            Value::Scalar {
                text: "x".into(),
                plain: false
            }
        );
    }

    #[test]
    fn duplicate_keys_rejected() {
        let err = tree("a: 1\nb: 2\na: 3\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "t.yaml:3:1: duplicate key `a` (first defined at line 1)"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = tree("a: [1, 2\nb: 3\n").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:"), "{err}");
        assert!(err.contains("YAML syntax error"), "{err}");
    }

    #[test]
    fn aliases_and_merge_keys() {
        let n = tree("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
            .unwrap()
            .unwrap();
        let m = map(&n);
        let other = map(&m[1].1);
        let keys: Vec<_> = other
            .iter()
            .map(|(k, v)| (k.as_key().unwrap(), v.as_key().unwrap()))
            .collect();
        assert_eq!(keys, vec![("y", "3"), ("x", "1")]);
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            src.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let err = tree(&src).unwrap_err().to_string();
        assert!(err.contains("document too large"), "{err}");
    }

    #[test]
    fn multiple_documents_rejected() {
        let err = tree("a: 1\n---\nb: 2\n").unwrap_err().to_string();
        assert!(err.contains("only one YAML document"), "{err}");
    }

    #[test]
    fn empty_document() {
        assert_eq!(tree("").unwrap(), None);
        assert_eq!(tree("# just a comment\n").unwrap(), None);
    }
}

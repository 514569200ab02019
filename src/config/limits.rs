//! Limits on what a config may hold and on what its error messages may repeat: the size of a
//! YAML document once its aliases are expanded, the characters of names, and how much of a
//! value an error quotes.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// Nodes (scalars, lists, mappings) a YAML stream may expand to, every alias followed: 10,000
/// accounts take about 150,000. An alias bomb of a few hundred bytes expands to billions.
pub const MAX_YAML_NODES: u64 = 1_000_000;
/// Bytes of scalar text a YAML stream may expand to, every alias followed: an alias repeats a
/// long value as surely as a big subtree.
pub const MAX_YAML_TEXT: u64 = 32 * 1024 * 1024;
/// Lists and mappings nested in one another; a config needs five.
pub const MAX_YAML_DEPTH: usize = 64;
/// Characters of a value an error message quotes before cutting it.
pub const QUOTE_CHARS: usize = 32;
/// Bytes of one error message, whatever it quotes (a parser's message may quote a key).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Bytes of a group or account name: they become label values.
pub const MAX_NAME_BYTES: usize = 256;

/// Refuses YAML whose expansion would exceed the limits above, by walking the parser's events
/// and counting what each alias stands for, without expanding anything. Syntax errors are left
/// to the real parse, which reports them with their position.
pub fn check_yaml(text: &str) -> Result<(), String> {
    let mut parser = Parser::new_from_str(text);
    // The expanded size of every anchored node: (nodes, text bytes).
    let mut anchored: HashMap<usize, (u64, u64)> = HashMap::new();
    // The lists and mappings being read: anchor id, size so far.
    let mut open: Vec<(usize, (u64, u64))> = Vec::new();
    let mut total = (0u64, 0u64);
    let mut aliases = false;
    loop {
        let Ok((event, _)) = parser.next_token() else {
            return Ok(());
        };
        let added = match event {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(value, _, anchor, _) => {
                let size = (1, value.len() as u64);
                if anchor > 0 {
                    anchored.insert(anchor, size);
                }
                size
            }
            Event::Alias(id) => {
                aliases = true;
                // An alias of a node still open (a recursive one) is refused by the parse.
                anchored.get(&id).copied().unwrap_or((1, 0))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_YAML_DEPTH {
                    return Err(format!(
                        "lists and mappings nest more than {MAX_YAML_DEPTH} deep"
                    ));
                }
                open.push((anchor, (0, 0)));
                (1, 0)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, size)) = open.pop()
                    && anchor > 0
                {
                    anchored.insert(anchor, size);
                }
                continue;
            }
            _ => continue,
        };
        total = (
            total.0.saturating_add(added.0),
            total.1.saturating_add(added.1),
        );
        for (_, size) in &mut open {
            *size = (
                size.0.saturating_add(added.0),
                size.1.saturating_add(added.1),
            );
        }
        let through = if aliases {
            " once its aliases are expanded"
        } else {
            ""
        };
        if total.0 > MAX_YAML_NODES {
            return Err(format!(
                "the YAML holds more than {MAX_YAML_NODES} values{through}; refused"
            ));
        }
        if total.1 > MAX_YAML_TEXT {
            return Err(format!(
                "the YAML holds more than {MAX_YAML_TEXT} bytes of text{through}; refused"
            ));
        }
    }
}

/// A value for an error message: quoted and escaped, cut after [`QUOTE_CHARS`] characters with
/// its full length said, so a huge value never becomes a huge log line or HTTP body.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}…({} bytes)", &value[..cut], value.len()),
    }
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] (on a character boundary), its full length
/// said.
pub fn clip(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let total = message.len();
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!("…({total} bytes)"));
    }
    message
}

/// Why `name` cannot be a group or account name (they become label values and log fields),
/// if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("is empty".into())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "{} is {} bytes long, more than {MAX_NAME_BYTES}",
            quote(name),
            name.len()
        ))
    } else {
        name.chars().find(|c| c.is_control()).map(|c| {
            format!(
                "{} contains the control character {c:?}; names become metric labels and log \
                 fields",
                quote(name)
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Nine levels of ten aliases each: 10^9 strings from 655 bytes.
    pub(crate) fn alias_bomb() -> String {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_refused_without_expanding_it() {
        assert_eq!(
            check_yaml(&alias_bomb()),
            Err(format!(
                "the YAML holds more than {MAX_YAML_NODES} values once its aliases are expanded; refused"
            ))
        );
    }

    #[test]
    fn a_long_value_repeated_through_aliases_is_refused() {
        let mut text = format!("a: &a \"{}\"\nb: [", "x".repeat(1024 * 1024));
        text.push_str(&vec!["*a"; 40].join(","));
        text.push_str("]\n");
        assert_eq!(
            check_yaml(&text),
            Err(format!(
                "the YAML holds more than {MAX_YAML_TEXT} bytes of text once its aliases are expanded; refused"
            ))
        );
    }

    #[test]
    fn ordinary_aliases_and_big_configs_pass() {
        let mut text = String::from("defaults: &d {protocol: imap, tls: starttls}\ngroups:\n");
        text.push_str("  - name: g\n    defaults: *d\n    accounts:\n");
        for i in 0..10_000 {
            text.push_str(&format!(
                "      - {{name: a{i}, server: mail.example.com, username: u{i}, password_file: p{i}}}\n"
            ));
        }
        assert_eq!(check_yaml(&text), Ok(()));
        // Syntax errors are for the parser proper.
        assert_eq!(check_yaml("groups: [\n"), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            check_yaml(&text),
            Err("lists and mappings nest more than 64 deep".into())
        );
    }

    #[test]
    fn quotes_are_cut() {
        assert_eq!(quote("BETS"), "\"BETS\"");
        assert_eq!(quote("a\u{1b}b"), "\"a\\u{1b}b\"");
        let long = "é".repeat(40);
        assert_eq!(
            quote(&long),
            format!("\"{}\"…(80 bytes)", "é".repeat(QUOTE_CHARS))
        );
    }

    #[test]
    fn messages_are_clipped() {
        assert_eq!(clip("short".into()), "short");
        let clipped = clip("é".repeat(1000));
        assert_eq!(clipped, format!("{}…(2000 bytes)", "é".repeat(512)));
    }

    #[test]
    fn names_with_control_characters_are_refused() {
        assert_eq!(name_problem("support-inbox"), None);
        assert_eq!(name_problem("Soporte Técnico"), None);
        for bad in [
            "a\u{1b}[31mred",
            "a\nb",
            "a\rb",
            "a\u{7f}",
            "a\u{85}b",
            "a\0",
        ] {
            let problem = name_problem(bad).unwrap();
            assert!(problem.contains("control character"), "{problem}");
        }
        assert_eq!(name_problem(" "), Some("is empty".into()));
        assert!(
            name_problem(&"x".repeat(300))
                .unwrap()
                .contains("300 bytes long")
        );
    }
}

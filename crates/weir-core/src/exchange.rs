//! Exchanges: named routers from a routing key (or headers) to topics, as in AMQP.
//!
//! The router is pure: [`Exchange::route`] yields target topic names, and the broker appends
//! the message to each (a topic is one kind of target). Matching rules:
//! - `direct`: the binding key equals the routing key;
//! - `topic`: dot-separated words, `*` matches exactly one word, `#` zero or more;
//! - `fanout`: every binding;
//! - `headers`: the binding's header pairs all match (`match_all`) or any matches.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// How an exchange matches bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeKind {
    Direct,
    Topic,
    Fanout,
    Headers,
}

impl std::str::FromStr for ExchangeKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "direct" => Ok(ExchangeKind::Direct),
            "topic" => Ok(ExchangeKind::Topic),
            "fanout" => Ok(ExchangeKind::Fanout),
            "headers" => Ok(ExchangeKind::Headers),
            other => Err(format!(
                "unknown exchange kind '{other}': expected direct, topic, fanout or headers"
            )),
        }
    }
}

/// A binding from an exchange to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub topic: String,
    /// The routing key (direct) or pattern (topic); ignored by fanout and headers.
    #[serde(default)]
    pub key: String,
    /// Header pairs a headers exchange matches on.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Headers exchange: all pairs must match (true) or any one (false).
    #[serde(default = "default_true")]
    pub match_all: bool,
}

fn default_true() -> bool {
    true
}

/// An exchange's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    /// Where messages no binding matches go, if anywhere.
    #[serde(default)]
    pub alternate_topic: Option<String>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

impl Exchange {
    /// The topics a message with `routing_key` and `headers` goes to (without the alternate).
    pub fn route<'exchange>(
        &'exchange self,
        routing_key: &str,
        headers: &[(String, bytes::Bytes)],
    ) -> BTreeSet<&'exchange str> {
        self.bindings
            .iter()
            .filter(|binding| match self.kind {
                ExchangeKind::Direct => binding.key == routing_key,
                ExchangeKind::Topic => topic_pattern_matches(&binding.key, routing_key),
                ExchangeKind::Fanout => true,
                ExchangeKind::Headers => headers_match(binding, headers),
            })
            .map(|binding| binding.topic.as_str())
            .collect()
    }
}

fn headers_match(binding: &Binding, headers: &[(String, bytes::Bytes)]) -> bool {
    let matches = |(name, value): &(String, String)| {
        headers
            .iter()
            .any(|(header, content)| header == name && content.as_ref() == value.as_bytes())
    };
    if binding.headers.is_empty() {
        return true;
    }
    if binding.match_all {
        binding.headers.iter().all(matches)
    } else {
        binding.headers.iter().any(matches)
    }
}

/// AMQP topic matching: `*` is exactly one word, `#` zero or more words.
pub fn topic_pattern_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let words: Vec<&str> = routing_key.split('.').collect();
    // matched[j]: the pattern prefix processed so far matches words[..j].
    let mut matched = vec![false; words.len() + 1];
    matched[0] = true;
    for part in &pattern {
        let mut next = vec![false; words.len() + 1];
        match *part {
            "#" => {
                let mut reachable = false;
                for (index, slot) in next.iter_mut().enumerate() {
                    reachable |= matched[index];
                    *slot = reachable;
                }
            }
            "*" => {
                next[1..].copy_from_slice(&matched[..words.len()]);
            }
            literal => {
                for index in 0..words.len() {
                    next[index + 1] = matched[index] && words[index] == literal;
                }
            }
        }
        matched = next;
    }
    matched[words.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A direct recursive definition of the same rules, to check the table-driven one.
    fn reference(pattern: &[&str], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => (0..=words.len()).any(|skip| reference(rest, &words[skip..])),
            Some((&"*", rest)) => !words.is_empty() && reference(rest, &words[1..]),
            Some((literal, rest)) => words.first() == Some(literal) && reference(rest, &words[1..]),
        }
    }

    proptest! {
        #[test]
        fn topic_matching_agrees_with_the_reference(
            pattern in proptest::collection::vec(prop_oneof!["a", "b", "\\*", "#"], 1..6),
            words in proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..6),
        ) {
            let pattern_text = pattern.join(".");
            let key = words.join(".");
            let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            prop_assert_eq!(topic_pattern_matches(&pattern_text, &key), reference(&pattern, &words));
        }
    }

    #[test]
    fn the_guides_order_routing_matrix() {
        let cases = [
            ("order.*", "order.created", true),
            ("order.*", "order.vip.created", false),
            ("order.#", "order", true),
            ("order.#", "order.vip.created", true),
            ("order.vip.*", "order.vip.created", true),
            ("order.vip.*", "order.normal.created", false),
            ("order.normal.*", "order.normal.paid", true),
            ("#", "anything.at.all", true),
            ("*.created", "order.created", true),
            ("*.created", "created", false),
            ("#.created", "created", true),
            ("order.#.paid", "order.paid", true),
            ("order.#.paid", "order.vip.x.paid", true),
            ("order.#.paid", "order.vip.x.created", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                topic_pattern_matches(pattern, key),
                expected,
                "{pattern} vs {key}"
            );
        }
    }

    fn binding(topic: &str, key: &str) -> Binding {
        Binding {
            topic: topic.into(),
            key: key.into(),
            headers: Vec::new(),
            match_all: true,
        }
    }

    #[test]
    fn each_kind_routes_as_amqp_does() {
        let mut exchange = Exchange {
            name: "orders".into(),
            kind: ExchangeKind::Direct,
            alternate_topic: None,
            bindings: vec![binding("vip", "order.vip"), binding("all", "order.normal")],
        };
        assert_eq!(exchange.route("order.vip", &[]), BTreeSet::from(["vip"]));
        assert!(exchange.route("order.other", &[]).is_empty());
        exchange.kind = ExchangeKind::Fanout;
        assert_eq!(exchange.route("x", &[]), BTreeSet::from(["vip", "all"]));
        exchange.kind = ExchangeKind::Headers;
        exchange.bindings = vec![Binding {
            topic: "eu".into(),
            key: String::new(),
            headers: vec![
                ("region".into(), "eu".into()),
                ("tier".into(), "gold".into()),
            ],
            match_all: false,
        }];
        let eu = [("region".to_string(), bytes::Bytes::from_static(b"eu"))];
        assert_eq!(exchange.route("", &eu), BTreeSet::from(["eu"]));
        exchange.bindings[0].match_all = true;
        assert!(exchange.route("", &eu).is_empty());
    }
}

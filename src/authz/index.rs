//! Finding the first matching rule without trying every rule.
//!
//! Most rules name what they are about in a way a request can be looked up by: the paths
//! every `to` entry requires (`/api/*`, `/items/{*}`: a literal prefix, or the whole path)
//! or, failing that, the exact principals every `from` entry requires. A [`RuleIndex`] files
//! each rule under those keys (a byte trie of path literals, a map of exact paths, a map of
//! principals) and keeps the rest in a list that is always tried. A decision then tries only
//! the rules filed under the request's path prefixes and its principal, plus the rest, and
//! still returns the *first* matching rule in policy order, so the policy a log line names
//! does not depend on the index.

use std::collections::HashMap;

use super::rule::{CompiledRule, Cx, IndexKeys};

/// Below this many rules, trying them in order is as fast as looking them up.
const LINEAR_BELOW: usize = 8;

/// The rules of one action, in policy order, with an index over them.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleIndex {
    /// The rules, in policy order; the positions below point here.
    rules: Vec<CompiledRule>,
    /// Rules with no key: always tried.
    rest: Vec<u32>,
    /// Rules by an exact path they require.
    exact_paths: HashMap<Box<str>, Vec<u32>>,
    /// Rules by a path prefix they require; node 0 is the root (the empty prefix).
    trie: Vec<TrieNode>,
    /// Rules by an exact principal they require.
    principals: HashMap<Box<str>, Vec<u32>>,
}

/// A node of the path-prefix trie.
#[derive(Debug, Clone, Default)]
struct TrieNode {
    /// The next byte and its node.
    next: Vec<(u8, u32)>,
    /// Rules whose prefix ends here.
    rules: Vec<u32>,
}

impl RuleIndex {
    /// Adds a rule after the ones already there.
    pub(crate) fn push(&mut self, rule: CompiledRule) {
        self.rules.push(rule);
    }

    /// Whether there are no rules.
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in policy order.
    pub(crate) fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Files every rule under its keys; call once all rules are pushed.
    pub(crate) fn build(&mut self) {
        if self.rules.len() < LINEAR_BELOW {
            return;
        }
        let mut rest = Vec::new();
        let mut exact_paths: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut trie = vec![TrieNode::default()];
        let mut principals: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        for (pos, rule) in self.rules.iter().enumerate() {
            let Ok(pos) = u32::try_from(pos) else {
                rest.push(u32::MAX);
                continue;
            };
            match rule.index_keys() {
                IndexKeys::Paths(keys) => {
                    for (literal, exact) in keys {
                        if exact {
                            let list = exact_paths.entry(literal.into()).or_default();
                            if list.last() != Some(&pos) {
                                list.push(pos);
                            }
                        } else if !trie_insert(&mut trie, literal, pos) {
                            rest.push(u32::MAX);
                        }
                    }
                }
                IndexKeys::Principals(keys) => {
                    for p in keys {
                        let list = principals.entry(p.into()).or_default();
                        if list.last() != Some(&pos) {
                            list.push(pos);
                        }
                    }
                }
                IndexKeys::None => rest.push(pos),
            }
        }
        if rest.contains(&u32::MAX) {
            // More rules than positions: stay linear.
            return;
        }
        self.rest = rest;
        self.exact_paths = exact_paths;
        self.trie = trie;
        self.principals = principals;
    }

    /// The first rule, in policy order, that matches.
    pub(crate) fn first(&self, cx: &Cx<'_, '_>) -> Option<&CompiledRule> {
        if self.trie.is_empty() {
            return self.rules.iter().find(|r| r.matches(cx));
        }
        let mut best: Option<u32> = None;
        self.try_list(&self.rest, cx, &mut best);
        if cx.req.is_http {
            if let Some(list) = self.exact_paths.get(cx.path) {
                self.try_list(list, cx, &mut best);
            }
            let mut node = self.trie.first();
            let mut bytes = cx.path.bytes();
            while let Some(n) = node {
                self.try_list(&n.rules, cx, &mut best);
                node = bytes.next().and_then(|b| {
                    n.next
                        .iter()
                        .find(|(nb, _)| *nb == b)
                        .and_then(|(_, i)| self.trie.get(*i as usize))
                });
            }
        }
        if let Some(list) = cx.req.peer_principal.and_then(|p| self.principals.get(p)) {
            self.try_list(list, cx, &mut best);
        }
        best.and_then(|pos| self.rules.get(pos as usize))
    }

    /// Tries the rules of `list` (ascending) that come before `best`; the first that matches
    /// becomes `best`.
    fn try_list(&self, list: &[u32], cx: &Cx<'_, '_>, best: &mut Option<u32>) {
        for &pos in list {
            if best.is_some_and(|b| pos >= b) {
                return;
            }
            if self.rules.get(pos as usize).is_some_and(|r| r.matches(cx)) {
                *best = Some(pos);
                return;
            }
        }
    }
}

/// Files rule `pos` under the trie node of `literal`, creating nodes as needed; `false`
/// when the trie is full.
fn trie_insert(trie: &mut Vec<TrieNode>, literal: &str, pos: u32) -> bool {
    let mut at = 0usize;
    for b in literal.bytes() {
        let existing = trie
            .get(at)
            .and_then(|n| n.next.iter().find(|(nb, _)| *nb == b).map(|(_, i)| *i));
        at = match existing {
            Some(i) => i as usize,
            None => {
                let i = trie.len();
                let Ok(id) = u32::try_from(i) else {
                    return false;
                };
                trie.push(TrieNode::default());
                if let Some(n) = trie.get_mut(at) {
                    n.next.push((b, id));
                }
                i
            }
        };
    }
    match trie.get_mut(at) {
        Some(n) => {
            if n.rules.last() != Some(&pos) {
                n.rules.push(pos);
            }
            true
        }
        None => false,
    }
}

//! The detector's rules: a small declarative set (TOML or JSON) with built-in defaults
//! (`default_rules.toml`), compiled once into regular expressions.

use std::path::Path;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use vana_sandbox_core::network::DenyReason;
use vana_sandbox_core::{LimitKind, Reporter, SecurityEventKind};

use super::finding::Severity;

/// The built-in rules, as shipped.
pub const DEFAULT_RULES_TOML: &str = include_str!("default_rules.toml");

/// Largest compiled size of one pattern (a guard against patterns that explode).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Errors of loading rules.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The file could not be read.
    #[error("cannot read rules file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or shape.
    #[error("rules (TOML): {0}")]
    Toml(#[source] toml::de::Error),
    /// JSON syntax or shape.
    #[error("rules (JSON): {0}")]
    Json(#[source] serde_json::Error),
    /// A pattern is not a valid regular expression.
    #[error("rule `{rule}`: pattern `{pattern}`: {source}")]
    Pattern {
        /// The rule.
        rule: String,
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// A new rule lacks its severity or trigger.
    #[error("rule `{0}` is new and needs `severity` and `when`")]
    Incomplete(String),
    /// A rule's values are out of range.
    #[error("rule `{rule}`: {reason}")]
    Invalid {
        /// The rule.
        rule: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn sixty() -> u64 {
    60
}

/// A rules file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Start from the built-in rules (default `true`); the file's rules add to or override them
    /// by id.
    #[serde(default = "yes")]
    pub builtin: bool,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One rule as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Its id (what findings and alerts name).
    pub id: String,
    /// `false` turns it off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its severity (required for a new rule).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// What it looks for, in words.
    #[serde(default)]
    pub summary: Option<String>,
    /// What triggers it (required for a new rule).
    #[serde(default)]
    pub when: Option<Trigger>,
}

/// Patterns over the submitted code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTrigger {
    /// Regular expressions over the whole code (multi-line); any one matches.
    pub patterns: Vec<String>,
    /// Only for these languages (canonical names); empty: every language.
    #[serde(default)]
    pub languages: Vec<String>,
    /// A match on a line that also matches one of these is ignored.
    #[serde(default)]
    pub unless: Vec<String>,
}

/// Security events of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTrigger {
    /// Event kinds.
    pub kinds: Vec<SecurityEventKind>,
    /// Only events from this reporter.
    #[serde(default)]
    pub source: Option<Reporter>,
    /// The detail must match one of these (empty: any detail).
    #[serde(default)]
    pub detail: Vec<String>,
    /// An event whose detail matches one of these is ignored.
    #[serde(default)]
    pub unless: Vec<String>,
}

/// Limits one run hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitTrigger {
    /// Which limits.
    pub limits: Vec<LimitKind>,
}

/// Limit hits from one tenant within a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatTrigger {
    /// Which limits count (empty: all).
    #[serde(default)]
    pub limits: Vec<LimitKind>,
    /// How many hits.
    pub count: u32,
    /// Within how many seconds.
    pub window_secs: u64,
}

/// Refused egress connections from one tenant within a window. A refusal counts when its host
/// matches one of `hosts` or its reason is one of `reasons`; with both empty, every refusal
/// counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressTrigger {
    /// Hosts (as the proxy normalised them) matching one of these patterns.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Refusals for one of these reasons (the proxy's names: `metadata_address`,
    /// `not_allowed`, …).
    #[serde(default)]
    pub reasons: Vec<DenyReason>,
    /// How many refusals (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Within how many seconds (default 60).
    #[serde(default = "sixty")]
    pub window_secs: u64,
}

/// What triggers a rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Static signs in the code.
    Code(CodeTrigger),
    /// Security events.
    SecurityEvent(EventTrigger),
    /// A limit hit by one run.
    Limit(LimitTrigger),
    /// Limit hits from one tenant within a window.
    RepeatedLimits(RepeatTrigger),
    /// Refused egress from one tenant within a window.
    EgressDenied(EgressTrigger),
}

/// A pattern and its source text.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    pub(crate) source: String,
    pub(crate) regex: Regex,
}

#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Code {
        /// Indices into the rule set's code patterns.
        patterns: Vec<usize>,
        languages: Vec<String>,
        unless: Vec<Pattern>,
    },
    Event {
        kinds: Vec<SecurityEventKind>,
        source: Option<Reporter>,
        detail: Vec<Pattern>,
        unless: Vec<Pattern>,
    },
    Limit {
        limits: Vec<LimitKind>,
    },
    Repeated {
        limits: Vec<LimitKind>,
        count: u32,
        window: std::time::Duration,
    },
    Egress {
        hosts: Vec<Pattern>,
        reasons: Vec<DenyReason>,
        count: u32,
        window: std::time::Duration,
    },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Id.
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// What it looks for.
    pub summary: String,
    /// As written.
    pub trigger: Trigger,
    pub(crate) compiled: Compiled,
}

/// A compiled rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    /// Every code pattern of every rule, for one pass over the code.
    pub(crate) code_set: RegexSet,
    pub(crate) code_patterns: Vec<Pattern>,
    /// `sha256:` of the effective rules (see [`RuleSet::fingerprint`]).
    fingerprint: String,
}

fn pattern(rule: &str, source: &str, multi_line: bool) -> Result<Pattern, RuleError> {
    RegexBuilder::new(source)
        .multi_line(multi_line)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|regex| Pattern {
            source: source.to_string(),
            regex,
        })
        .map_err(|e| RuleError::Pattern {
            rule: rule.to_string(),
            pattern: source.to_string(),
            source: e,
        })
}

fn patterns(rule: &str, sources: &[String], multi_line: bool) -> Result<Vec<Pattern>, RuleError> {
    sources
        .iter()
        .map(|s| pattern(rule, s, multi_line))
        .collect()
}

/// `sha256:` of the rules' canonical JSON.
fn fingerprint(rules: &[RuleConfig]) -> String {
    use sha2::{Digest, Sha256};
    // Serialising plain data cannot fail; an empty body would still name the (empty) set.
    let body = serde_json::to_vec(rules).unwrap_or_default();
    format!("sha256:{}", crate::util::hex(&Sha256::digest(&body)))
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::builtin()
    }
}

impl RuleSet {
    /// The built-in rules.
    pub fn builtin() -> Self {
        match Self::from_config(RulesConfig {
            builtin: true,
            rules: Vec::new(),
        }) {
            Ok(r) => r,
            Err(e) => {
                // The built-in file is checked by the tests; this cannot happen in a release.
                tracing::error!(error = %e, "the built-in threat rules do not load; no rules are active");
                Self::empty()
            }
        }
    }

    /// No rules.
    pub fn empty() -> Self {
        Self {
            rules: Vec::new(),
            code_set: RegexSet::empty(),
            code_patterns: Vec::new(),
            fingerprint: fingerprint(&[]),
        }
    }

    /// Rules from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, RuleError> {
        Self::from_config(toml::from_str(text).map_err(RuleError::Toml)?)
    }

    /// Rules from JSON text.
    pub fn from_json(text: &str) -> Result<Self, RuleError> {
        Self::from_config(serde_json::from_str(text).map_err(RuleError::Json)?)
    }

    /// Rules from a file: JSON for `.json`, TOML otherwise.
    pub fn from_path(path: &Path) -> Result<Self, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        }
    }

    /// Rules from a parsed configuration (built-in rules first when `builtin`).
    pub fn from_config(config: RulesConfig) -> Result<Self, RuleError> {
        let mut merged: Vec<RuleConfig> = if config.builtin {
            let base: RulesConfig = toml::from_str(DEFAULT_RULES_TOML).map_err(RuleError::Toml)?;
            base.rules
        } else {
            Vec::new()
        };
        for r in config.rules {
            match merged.iter_mut().find(|m| m.id == r.id) {
                Some(m) => {
                    m.enabled = r.enabled;
                    if r.severity.is_some() {
                        m.severity = r.severity;
                    }
                    if r.summary.is_some() {
                        m.summary = r.summary;
                    }
                    if r.when.is_some() {
                        m.when = r.when;
                    }
                }
                None => merged.push(r),
            }
        }
        merged.retain(|r| r.enabled);
        let fingerprint = fingerprint(&merged);
        let mut rules = Vec::new();
        let mut code_patterns = Vec::new();
        for r in merged {
            let (Some(severity), Some(trigger)) = (r.severity, r.when.clone()) else {
                return Err(RuleError::Incomplete(r.id));
            };
            let invalid = |reason| RuleError::Invalid {
                rule: r.id.clone(),
                reason,
            };
            let compiled = match &trigger {
                Trigger::Code(c) => {
                    if c.patterns.is_empty() {
                        return Err(invalid("a code trigger needs at least one pattern"));
                    }
                    let mut idx = Vec::new();
                    for p in patterns(&r.id, &c.patterns, true)? {
                        idx.push(code_patterns.len());
                        code_patterns.push(p);
                    }
                    Compiled::Code {
                        patterns: idx,
                        languages: c.languages.clone(),
                        unless: patterns(&r.id, &c.unless, false)?,
                    }
                }
                Trigger::SecurityEvent(e) => {
                    if e.kinds.is_empty() {
                        return Err(invalid("a security_event trigger needs at least one kind"));
                    }
                    Compiled::Event {
                        kinds: e.kinds.clone(),
                        source: e.source,
                        detail: patterns(&r.id, &e.detail, false)?,
                        unless: patterns(&r.id, &e.unless, false)?,
                    }
                }
                Trigger::Limit(l) => {
                    if l.limits.is_empty() {
                        return Err(invalid("a limit trigger needs at least one limit"));
                    }
                    Compiled::Limit {
                        limits: l.limits.clone(),
                    }
                }
                Trigger::RepeatedLimits(t) => {
                    if t.count == 0 || t.window_secs == 0 {
                        return Err(invalid("count and window_secs must be at least 1"));
                    }
                    Compiled::Repeated {
                        limits: t.limits.clone(),
                        count: t.count,
                        window: std::time::Duration::from_secs(t.window_secs),
                    }
                }
                Trigger::EgressDenied(t) => {
                    if t.count == 0 || t.window_secs == 0 {
                        return Err(invalid("count and window_secs must be at least 1"));
                    }
                    Compiled::Egress {
                        hosts: patterns(&r.id, &t.hosts, false)?,
                        reasons: t.reasons.clone(),
                        count: t.count,
                        window: std::time::Duration::from_secs(t.window_secs),
                    }
                }
            };
            rules.push(Rule {
                summary: r.summary.clone().unwrap_or_else(|| r.id.clone()),
                id: r.id,
                severity,
                trigger,
                compiled,
            });
        }
        let code_set = RegexSetBuilder::new(code_patterns.iter().map(|p| p.source.as_str()))
            .multi_line(true)
            .size_limit(REGEX_SIZE_LIMIT * 16)
            .build()
            .map_err(|e| RuleError::Pattern {
                rule: "(all code rules)".into(),
                pattern: String::new(),
                source: e,
            })?;
        Ok(Self {
            rules,
            code_set,
            code_patterns,
            fingerprint,
        })
    }

    /// `sha256:<hex>` of the effective rules (built-in and file rules merged, disabled ones
    /// left out, as canonical JSON): what a `config_loaded` audit record names, so that an
    /// auditor can tell which rules judged a run.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule named `id`.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_builtin_rules_load() {
        let c: RulesConfig = toml::from_str(DEFAULT_RULES_TOML).unwrap();
        let r = RuleSet::from_config(RulesConfig {
            builtin: true,
            rules: vec![],
        })
        .unwrap();
        assert_eq!(r.rules().len(), c.rules.len());
        assert!(r.get("reverse_shell").is_some());
    }

    #[test]
    fn a_file_overrides_disables_and_adds() {
        let r = RuleSet::from_toml(
            r#"
            [[rules]]
            id = "memory_exhaustion"
            enabled = false

            [[rules]]
            id = "seccomp_kill"
            severity = "critical"

            [[rules]]
            id = "no_curl"
            severity = "low"
            [rules.when.code]
            patterns = ['\bcurl\b']
            "#,
        )
        .unwrap();
        assert!(r.get("memory_exhaustion").is_none());
        assert_eq!(r.get("seccomp_kill").unwrap().severity, Severity::Critical);
        assert!(r.get("no_curl").is_some());
        let only = RuleSet::from_json(r#"{"builtin": false, "rules": [{"id": "x", "severity": "low", "when": {"limit": {"limits": ["timeout"]}}}]}"#).unwrap();
        assert_eq!(only.rules().len(), 1);
    }

    #[test]
    fn the_fingerprint_names_the_effective_rules() {
        let builtin = RuleSet::builtin();
        assert!(builtin.fingerprint().starts_with("sha256:"));
        assert_eq!(builtin.fingerprint(), RuleSet::builtin().fingerprint());
        assert_ne!(builtin.fingerprint(), RuleSet::empty().fingerprint());
        // A file that changes nothing has the built-in set's fingerprint; one that does, not.
        let same = RuleSet::from_toml("builtin = true\n").unwrap();
        assert_eq!(same.fingerprint(), builtin.fingerprint());
        let off =
            RuleSet::from_toml("[[rules]]\nid = \"memory_exhaustion\"\nenabled = false\n").unwrap();
        assert_ne!(off.fingerprint(), builtin.fingerprint());
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let e = RuleSet::from_toml("[[rules]]\nid = \"new\"\n").unwrap_err();
        assert!(e.to_string().contains("needs `severity` and `when`"), "{e}");
        let e = RuleSet::from_toml(
            "[[rules]]\nid = \"bad\"\nseverity = \"low\"\n[rules.when.code]\npatterns = ['(']\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("rule `bad`: pattern `(`"), "{e}");
        let e = RuleSet::from_toml("[[rules]]\nid = \"x\"\ncolour = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}

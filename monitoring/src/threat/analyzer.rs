//! The detector's logic, synchronous and deterministic (time is passed in): signals in,
//! findings out. [`ThreatDetector`](super::ThreatDetector) runs it on its own thread.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use vana_sandbox_core::network::{Decision, Verdict};
use vana_sandbox_core::{LimitKind, SecurityEvent};

use super::finding::{Evidence, Finding, MAX_EVIDENCE};
use super::rules::{Compiled, Rule, RuleSet};

/// Most runs whose state is kept at once (runs that never finish are evicted oldest first).
pub const MAX_TRACKED_RUNS: usize = 10_000;
/// Longest line kept as evidence.
const MAX_LINE_CHARS: usize = 200;

/// What the detector is told: owned copies of the parts of events it needs.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A run started with this code.
    Started {
        /// Execution id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// Canonical language.
        language: String,
        /// The code (possibly cut to the detector's bound).
        code: String,
    },
    /// A security event of a run.
    Security {
        /// Execution id.
        id: String,
        /// The event.
        event: SecurityEvent,
    },
    /// A limit a run hit.
    Limit {
        /// Execution id.
        id: String,
        /// Which.
        limit: LimitKind,
    },
    /// A run finished (or was cancelled): its findings are complete.
    Finished {
        /// Execution id.
        id: String,
    },
    /// An egress decision of the proxy (only refusals can make findings).
    Network {
        /// Execution or session id.
        id: String,
        /// Tenant.
        tenant: Option<String>,
        /// The decision.
        decision: Decision,
    },
}

#[derive(Debug, Default)]
struct RunState {
    tenant: Option<String>,
    language: Option<String>,
    /// Evidence per rule index, and how many matched in all.
    hits: Vec<(usize, Vec<Evidence>, usize)>,
}

impl RunState {
    fn add(&mut self, rule: usize, ev: Evidence) {
        match self.hits.iter_mut().find(|(r, _, _)| *r == rule) {
            Some((_, evs, n)) => {
                *n += 1;
                if evs.len() < MAX_EVIDENCE {
                    evs.push(ev);
                }
            }
            None => self.hits.push((rule, vec![ev], 1)),
        }
    }
}

/// Evaluates rules over signals.
#[derive(Debug)]
pub struct Analyzer {
    rules: RuleSet,
    /// Runs by id, each with the sequence number it was first seen at.
    runs: HashMap<String, (u64, RunState)>,
    /// Ids in the order first seen (with that number), for evicting the oldest; entries of
    /// finished runs are skipped lazily, so finishing a run costs O(1).
    order: VecDeque<(u64, String)>,
    seen: u64,
    /// Per (rule index, tenant): recent matching occurrences.
    windows: HashMap<(usize, String), VecDeque<(Instant, Evidence)>>,
}

fn cut(s: &str) -> String {
    let t = s.trim();
    match t.char_indices().nth(MAX_LINE_CHARS) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

fn subject(tenant: &Option<String>) -> String {
    tenant.clone().unwrap_or_else(|| "-".into())
}

impl Analyzer {
    /// An analyzer for `rules`.
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules,
            runs: HashMap::new(),
            order: VecDeque::new(),
            seen: 0,
            windows: HashMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Static findings for `code` in `language` (no run id, no tenant).
    pub fn scan_code(&self, language: &str, code: &str) -> Vec<Finding> {
        let matched = self.rules.code_set.matches(code);
        if !matched.matched_any() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for rule in &self.rules.rules {
            let Compiled::Code {
                patterns,
                languages,
                unless,
            } = &rule.compiled
            else {
                continue;
            };
            if !languages.is_empty() && !languages.iter().any(|l| l == language) {
                continue;
            }
            let mut evidence = Vec::new();
            let mut total = 0;
            for &i in patterns.iter().filter(|&&i| matched.matched(i)) {
                let p = &self.rules.code_patterns[i];
                for m in p.regex.find_iter(code) {
                    let start = code[..m.start()].rfind('\n').map_or(0, |n| n + 1);
                    let end = code[m.start()..]
                        .find('\n')
                        .map_or(code.len(), |n| m.start() + n);
                    let line_text = &code[start..end];
                    if unless.iter().any(|u| u.regex.is_match(line_text)) {
                        continue;
                    }
                    total += 1;
                    if evidence.len() < MAX_EVIDENCE {
                        evidence.push(Evidence::Code {
                            line: code[..m.start()].matches('\n').count() + 1,
                            text: cut(line_text),
                            pattern: p.source.clone(),
                        });
                    }
                }
            }
            if evidence.is_empty() {
                continue;
            }
            evidence.sort_by_key(|e| match e {
                Evidence::Code { line, .. } => *line,
                _ => 0,
            });
            let first = evidence[0].to_string();
            let more = if total > 1 {
                format!(" (and {} more match(es))", total - 1)
            } else {
                String::new()
            };
            out.push(Finding {
                rule: rule.id.clone(),
                severity: rule.severity,
                summary: rule.summary.clone(),
                run_id: None,
                tenant: None,
                language: Some(language.to_string()),
                explanation: format!("rule `{}` ({}): {first}{more}", rule.id, rule.summary),
                evidence,
            });
        }
        out
    }

    fn run(&mut self, id: &str) -> &mut RunState {
        if !self.runs.contains_key(id) {
            while self.runs.len() >= MAX_TRACKED_RUNS {
                let Some((seq, old)) = self.order.pop_front() else {
                    break;
                };
                if self.runs.get(&old).is_some_and(|(s, _)| *s == seq) {
                    self.runs.remove(&old);
                }
            }
            if self.order.len() > 2 * self.runs.len() + 1024 {
                let runs = &self.runs;
                self.order
                    .retain(|(seq, id)| runs.get(id).is_some_and(|(s, _)| s == seq));
            }
        }
        let (seen, order) = (&mut self.seen, &mut self.order);
        &mut self
            .runs
            .entry(id.to_string())
            .or_insert_with(|| {
                *seen += 1;
                order.push_back((*seen, id.to_string()));
                (*seen, RunState::default())
            })
            .1
    }

    /// Takes one signal at time `now`; returns the findings it completes.
    pub fn observe(&mut self, signal: Signal, now: Instant) -> Vec<Finding> {
        match signal {
            Signal::Started {
                id,
                tenant,
                language,
                code,
            } => {
                let mut found = self.scan_code(&language, &code);
                for f in &mut found {
                    f.run_id = Some(id.clone());
                    f.tenant.clone_from(&tenant);
                }
                let run = self.run(&id);
                run.tenant = tenant;
                run.language = Some(language);
                found
            }
            Signal::Security { id, event } => {
                let matching: Vec<usize> = self
                    .rules
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| event_matches(r, &event))
                    .map(|(i, _)| i)
                    .collect();
                let run = self.run(&id);
                for i in matching {
                    run.add(
                        i,
                        Evidence::Security {
                            run_id: id.clone(),
                            kind: event.kind,
                            source: event.source,
                            detail: cut(&event.detail),
                        },
                    );
                }
                Vec::new()
            }
            Signal::Limit { id, limit } => {
                let ev = Evidence::Limit {
                    run_id: id.clone(),
                    limit,
                };
                let per_run: Vec<usize> = self
                    .rules
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(&r.compiled, Compiled::Limit { limits } if limits.contains(&limit)))
                    .map(|(i, _)| i)
                    .collect();
                let run = self.run(&id);
                for &i in &per_run {
                    run.add(i, ev.clone());
                }
                let tenant = run.tenant.clone();
                let mut found = Vec::new();
                for (i, rule) in self.rules.rules.iter().enumerate() {
                    if let Compiled::Repeated {
                        limits,
                        count,
                        window,
                    } = &rule.compiled
                    {
                        if limits.is_empty() || limits.contains(&limit) {
                            found.extend(windowed(
                                &mut self.windows,
                                (i, rule),
                                &tenant,
                                ev.clone(),
                                (*count, *window),
                                now,
                                "limit hits",
                            ));
                        }
                    }
                }
                found
            }
            Signal::Network {
                id,
                tenant,
                decision,
            } => {
                let Verdict::Denied(reason) = decision.verdict else {
                    return Vec::new();
                };
                let host = decision.host;
                let ev = Evidence::Network {
                    run_id: id,
                    host: host.clone(),
                    port: decision.port,
                    reason,
                };
                let mut found = Vec::new();
                for (i, rule) in self.rules.rules.iter().enumerate() {
                    if let Compiled::Egress {
                        hosts,
                        reasons,
                        count,
                        window,
                    } = &rule.compiled
                    {
                        let any = hosts.is_empty() && reasons.is_empty();
                        if any
                            || reasons.contains(&reason)
                            || hosts.iter().any(|h| h.regex.is_match(&host))
                        {
                            found.extend(windowed(
                                &mut self.windows,
                                (i, rule),
                                &tenant,
                                ev.clone(),
                                (*count, *window),
                                now,
                                "refused egress attempts",
                            ));
                        }
                    }
                }
                found
            }
            Signal::Finished { id } => {
                let Some((_, run)) = self.runs.remove(&id) else {
                    return Vec::new();
                };
                run.hits
                    .into_iter()
                    .map(|(i, evidence, total)| {
                        let rule = &self.rules.rules[i];
                        let more = if total > 1 {
                            format!(" (and {} more)", total - 1)
                        } else {
                            String::new()
                        };
                        Finding {
                            rule: rule.id.clone(),
                            severity: rule.severity,
                            summary: rule.summary.clone(),
                            run_id: Some(id.clone()),
                            tenant: run.tenant.clone(),
                            language: run.language.clone(),
                            explanation: format!(
                                "rule `{}` ({}): {}{more}",
                                rule.id, rule.summary, evidence[0]
                            ),
                            evidence,
                        }
                    })
                    .collect()
            }
        }
    }
}

fn event_matches(rule: &Rule, event: &SecurityEvent) -> bool {
    let Compiled::Event {
        kinds,
        source,
        detail,
        unless,
    } = &rule.compiled
    else {
        return false;
    };
    kinds.contains(&event.kind)
        && source.is_none_or(|s| s == event.source)
        && (detail.is_empty() || detail.iter().any(|p| p.regex.is_match(&event.detail)))
        && !unless.iter().any(|p| p.regex.is_match(&event.detail))
}

/// Adds one occurrence to a (rule, tenant) window; a finding when it holds `count` of them
/// (the window then starts afresh).
fn windowed(
    windows: &mut HashMap<(usize, String), VecDeque<(Instant, Evidence)>>,
    (index, rule): (usize, &Rule),
    tenant: &Option<String>,
    ev: Evidence,
    (count, window): (u32, std::time::Duration),
    now: Instant,
    what: &str,
) -> Option<Finding> {
    let w = windows.entry((index, subject(tenant))).or_default();
    while w
        .front()
        .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
    {
        w.pop_front();
    }
    w.push_back((now, ev));
    if w.len() < count as usize {
        return None;
    }
    let evidence: Vec<Evidence> = w.drain(..).map(|(_, e)| e).take(MAX_EVIDENCE).collect();
    let who = match tenant {
        Some(t) => format!("tenant `{t}`"),
        None => "the host's own caller (no tenant)".into(),
    };
    let run_id = match evidence.last() {
        Some(Evidence::Limit { run_id, .. } | Evidence::Network { run_id, .. }) => {
            Some(run_id.clone())
        }
        _ => None,
    };
    Some(Finding {
        rule: rule.id.clone(),
        severity: rule.severity,
        summary: rule.summary.clone(),
        run_id,
        tenant: tenant.clone(),
        language: None,
        explanation: format!(
            "rule `{}` ({}): {count} {what} within {} s from {who}; the last: {}",
            rule.id,
            rule.summary,
            window.as_secs(),
            evidence.last().map(ToString::to_string).unwrap_or_default()
        ),
        evidence,
    })
}

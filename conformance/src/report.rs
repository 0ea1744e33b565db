//! Reports: one run's results as JSON (versioned schema, see REPORT.md),
//! JUnit XML, Markdown or human text, and `compare` across runs. Pure
//! formatting: nothing here runs a case.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::catalog::{Level, Outcome};

/// The JSON schema identifier written in every report.
pub const REPORT_SCHEMA: &str = "doppel-report/1";

/// The runtime a report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Adapter's runtime name.
    pub name: String,
    /// First line of the version command's output, if any.
    pub version: Option<String>,
    /// Where the adapter came from.
    pub adapter: String,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReport {
    /// `area::case`.
    pub id: String,
    /// MUST or SHOULD.
    pub level: Level,
    /// The verdict, flattened: `outcome` plus its fields.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time of the case, world included.
    pub duration_ms: u64,
    /// How a scene was staged when it matters (e.g. `record-rewrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Passed cases.
    pub pass: usize,
    /// Failed cases (any level).
    pub fail: usize,
    /// Failed MUST cases.
    pub must_fail: usize,
    /// Not applicable to this adapter.
    pub not_applicable: usize,
    /// Not staged on this machine.
    pub not_staged: usize,
}

/// How many of the run's cases are paired with a flaw (their
/// `caught_by`) that the suite's own tests (tests/world_outcomes.rs) show
/// making them fail: a property of the catalog, not measured in the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// Cases in the run.
    pub cases: usize,
    /// Of those, cases paired with at least one flaw (flawbox or the naive
    /// runtime) that tests/world_outcomes.rs shows failing them. The field
    /// name is kept for readers of `doppel-report/1`.
    pub proven_to_fail: usize,
}

/// One run of the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// The runtime under test.
    pub runtime: RuntimeInfo,
    /// Machine capabilities missing, with reasons (empty when all present).
    pub machine_missing: Vec<String>,
    /// Wall time of the whole run.
    pub duration_ms: u64,
    /// Counts.
    pub summary: Summary,
    /// Catalog sensitivity over the selected cases.
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// Every case that was selected, in catalog order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Builds a report, computing the summary.
    pub fn new(
        runtime: RuntimeInfo,
        machine_missing: Vec<String>,
        duration_ms: u64,
        cases: Vec<CaseReport>,
        sensitivity: Sensitivity,
    ) -> Report {
        let mut summary = Summary::default();
        for c in &cases {
            match &c.outcome {
                Outcome::Pass => summary.pass += 1,
                Outcome::Fail(_) => {
                    summary.fail += 1;
                    if c.level == Level::Must {
                        summary.must_fail += 1;
                    }
                }
                Outcome::NotApplicable { .. } => summary.not_applicable += 1,
                Outcome::NotStaged { .. } => summary.not_staged += 1,
            }
        }
        Report {
            schema: REPORT_SCHEMA.to_string(),
            runtime,
            machine_missing,
            duration_ms,
            summary,
            sensitivity,
            cases,
        }
    }

    /// Whether the run failed (any MUST case failed).
    pub fn failed(&self) -> bool {
        self.summary.must_fail > 0
    }

    /// Why nothing was tested, when no case ran to a verdict (none passed
    /// or failed): every one not applicable or not staged. One line: the
    /// counts and the most frequent reason.
    pub fn nothing_tested(&self) -> Option<String> {
        if self.summary.pass + self.summary.fail > 0 {
            return None;
        }
        // Reasons alike but for the world they were seen in count as one.
        let mut reasons: Vec<(String, String, usize)> = Vec::new();
        for c in &self.cases {
            if let Outcome::NotStaged { why } | Outcome::NotApplicable { why } = &c.outcome {
                let key = without_world_dirs(why);
                match reasons.iter_mut().find(|(k, _, _)| *k == key) {
                    Some((_, _, n)) => *n += 1,
                    None => reasons.push((key, why.clone(), 1)),
                }
            }
        }
        // The most frequent reason; the first seen among equals.
        let top = reasons
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, _, n))| (*n, std::cmp::Reverse(*i)))
            .map(|(_, r)| r);
        let counts = format!(
            "{} case(s): {} not staged, {} not applicable",
            self.cases.len(),
            self.summary.not_staged,
            self.summary.not_applicable
        );
        Some(match top {
            Some((_, why, n)) => {
                let flat = why.split_whitespace().collect::<Vec<_>>().join(" ");
                let mut why: String = flat.chars().take(300).collect();
                if flat.chars().count() > 300 {
                    why.push('…');
                }
                let which = if *n > 1 {
                    format!("{n} of them because")
                } else {
                    "the first because".to_string()
                };
                format!("nothing was tested ({counts}); {which}: {why}")
            }
            None => format!("nothing was tested ({counts})"),
        })
    }
}

/// `why` with every world dir name (`doppel-world-<pid>-<hex>`) made
/// alike, so reasons seen in different worlds compare equal.
fn without_world_dirs(why: &str) -> String {
    const WORLD: &str = "doppel-world-";
    let mut out = String::with_capacity(why.len());
    let mut rest = why;
    while let Some(i) = rest.find(WORLD) {
        out.push_str(&rest[..i + WORLD.len()]);
        rest =
            rest[i + WORLD.len()..].trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '-');
        out.push('*');
    }
    out.push_str(rest);
    out
}

/// Output formats of `doppel run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal.
    Human,
    /// The versioned JSON schema.
    Json,
    /// JUnit XML for CI.
    Junit,
    /// A Markdown table.
    Markdown,
}

/// Renders a report in a format.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Human => human(report),
        Format::Json => json(report),
        Format::Junit => junit(report),
        Format::Markdown => markdown(report),
    }
}

/// JSON, pretty-printed, newline-terminated.
pub fn json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("a report always serializes");
    s.push('\n');
    s
}

fn detail(o: &Outcome) -> String {
    match o {
        Outcome::Pass => String::new(),
        Outcome::Fail(f) => format!("expected: {}; observed: {}", f.expected, f.observed),
        Outcome::NotApplicable { why } | Outcome::NotStaged { why } => why.clone(),
    }
}

fn runtime_label(r: &RuntimeInfo) -> String {
    match &r.version {
        Some(v) => format!("{} ({v})", r.name),
        None => r.name.clone(),
    }
}

fn summary_line(s: &Summary) -> String {
    format!(
        "{} passed, {} failed ({} MUST), {} not applicable, {} not staged",
        s.pass, s.fail, s.must_fail, s.not_applicable, s.not_staged
    )
}

/// Human text.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "doppel: {}", runtime_label(&report.runtime));
    for m in &report.machine_missing {
        let _ = writeln!(out, "  machine lacks: {m}");
    }
    let width = report.cases.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &report.cases {
        let word = match c.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail(_) => "FAIL",
            Outcome::NotApplicable { .. } => "N/A",
            Outcome::NotStaged { .. } => "NOT STAGED",
        };
        let _ = writeln!(
            out,
            "{word:<10} {:<6} {:<width$} {:>6} ms",
            c.level.to_string(),
            c.id,
            c.duration_ms
        );
        match &c.outcome {
            Outcome::Pass => {}
            Outcome::Fail(f) => {
                let _ = writeln!(out, "           expected: {}", f.expected);
                let _ = writeln!(out, "           observed: {}", f.observed);
                for e in &f.evidence {
                    let _ = writeln!(out, "           evidence: {e}");
                }
            }
            Outcome::NotApplicable { why } | Outcome::NotStaged { why } => {
                let _ = writeln!(out, "           why: {why}");
            }
        }
        if let Some(s) = &c.staging {
            let _ = writeln!(out, "           staging: {s}");
        }
    }
    let _ = writeln!(
        out,
        "{} in {} ms",
        summary_line(&report.summary),
        report.duration_ms
    );
    let _ = writeln!(out, "{}", sensitivity_line(&report.sensitivity));
    out
}

fn sensitivity_line(s: &Sensitivity) -> String {
    format!(
        "sensitivity: {}/{} cases are paired with a flaw that the suite's tests show they catch (conformance/tests/world_outcomes.rs)",
        s.proven_to_fail, s.cases
    )
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown section with one table.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## doppel: {}\n",
        md_cell(&runtime_label(&report.runtime))
    );
    let _ = writeln!(out, "{}\n", summary_line(&report.summary));
    let _ = writeln!(out, "{}\n", sensitivity_line(&report.sensitivity));
    let _ = writeln!(out, "| case | level | outcome | detail |");
    let _ = writeln!(out, "|---|---|---|---|");
    for c in &report.cases {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            c.id,
            c.level,
            c.outcome.word(),
            md_cell(&detail(&c.outcome))
        );
    }
    out
}

fn xml(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// JUnit XML: one testsuite, one testcase per case; not-applicable and
/// not-staged cases are `<skipped>` with the reason.
pub fn junit(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<testsuites name="doppel" tests="{}" failures="{}" skipped="{}" time="{:.3}">"#,
        report.cases.len(),
        s.fail,
        s.not_applicable + s.not_staged,
        report.duration_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        r#"  <testsuite name="{}" tests="{}" failures="{}" skipped="{}" time="{:.3}">"#,
        xml(&report.runtime.name),
        report.cases.len(),
        s.fail,
        s.not_applicable + s.not_staged,
        report.duration_ms as f64 / 1000.0
    );
    for c in &report.cases {
        let _ = write!(
            out,
            r#"    <testcase classname="doppel.{}.{}" name="{}" time="{:.3}""#,
            xml(&report.runtime.name),
            c.level,
            xml(&c.id),
            c.duration_ms as f64 / 1000.0
        );
        match &c.outcome {
            Outcome::Pass => {
                let _ = writeln!(out, "/>");
            }
            Outcome::Fail(f) => {
                let _ = writeln!(out, ">");
                let _ = writeln!(
                    out,
                    r#"      <failure message="{}" type="{}">expected: {}"#,
                    xml(&f.observed),
                    c.level,
                    xml(&f.expected)
                );
                let _ = writeln!(out, "observed: {}", xml(&f.observed));
                for e in &f.evidence {
                    let _ = writeln!(out, "evidence: {}", xml(e));
                }
                let _ = writeln!(out, "</failure>");
                let _ = writeln!(out, "    </testcase>");
            }
            Outcome::NotApplicable { why } | Outcome::NotStaged { why } => {
                let _ = writeln!(out, ">");
                let _ = writeln!(
                    out,
                    r#"      <skipped message="{}: {}"/>"#,
                    c.outcome.word(),
                    xml(why)
                );
                let _ = writeln!(out, "    </testcase>");
            }
        }
    }
    let _ = writeln!(out, "  </testsuite>");
    let _ = writeln!(out, "</testsuites>");
    out
}

/// A Markdown table comparing runs: one row per case, one column per runtime.
pub fn compare(reports: &[Report]) -> String {
    let mut order: Vec<(String, Level)> = Vec::new();
    let mut cells: BTreeMap<(String, usize), String> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        for c in &r.cases {
            if !order.iter().any(|(id, _)| *id == c.id) {
                order.push((c.id.clone(), c.level));
            }
            let cell = match &c.outcome {
                Outcome::Pass => "pass".to_string(),
                Outcome::Fail(_) => "**FAIL**".to_string(),
                Outcome::NotApplicable { .. } => "n/a".to_string(),
                Outcome::NotStaged { .. } => "not staged".to_string(),
            };
            cells.insert((c.id.clone(), i), cell);
        }
    }
    let mut out = String::new();
    let _ = write!(out, "| case | level |");
    for r in reports {
        let _ = write!(out, " {} |", md_cell(&runtime_label(&r.runtime)));
    }
    let _ = writeln!(out);
    let _ = write!(out, "|---|---|");
    for _ in reports {
        let _ = write!(out, "---|");
    }
    let _ = writeln!(out);
    for (id, level) in &order {
        let _ = write!(out, "| `{id}` | {level} |");
        for i in 0..reports.len() {
            let cell = cells
                .get(&(id.clone(), i))
                .map(String::as_str)
                .unwrap_or("—");
            let _ = write!(out, " {cell} |");
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| **MUST failures** | |");
    for r in reports {
        let _ = write!(out, " {} |", r.summary.must_fail);
    }
    let _ = writeln!(out);
    out
}

/// One line of a failure for a table's footnotes: what the runtime did,
/// clipped to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let s = md_cell(s.trim());
    if s.chars().count() <= max {
        return s;
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

/// [`compare`], then one line per run (version, counts, wall time) and one
/// line per failure with what was observed: the operation, the PID and what
/// the impostor received, so a runtime author can act on each FAIL.
pub fn compare_with_evidence(reports: &[Report]) -> String {
    let mut out = compare(reports);
    let _ = writeln!(out, "\n### Runs\n");
    for r in reports {
        let _ = writeln!(
            out,
            "- **{}**: {} in {:.1} s{}",
            md_cell(&runtime_label(&r.runtime)),
            summary_line(&r.summary),
            r.duration_ms as f64 / 1000.0,
            if r.machine_missing.is_empty() {
                String::new()
            } else {
                format!("; machine lacks {}", md_cell(&r.machine_missing.join("; ")))
            }
        );
    }
    let mut failures = String::new();
    for r in reports {
        for c in &r.cases {
            if let Outcome::Fail(f) = &c.outcome {
                let staging = c
                    .staging
                    .as_deref()
                    .map(|s| format!(" (staged by {})", md_cell(s)))
                    .unwrap_or_default();
                let _ = writeln!(
                    failures,
                    "- **{}** `{}` {}{staging}: {}",
                    md_cell(&r.runtime.name),
                    c.id,
                    c.level,
                    one_line(&f.observed, 600)
                );
            }
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "\n### Failures\n");
        out.push_str(&failures);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Failure;

    fn sample(name: &str, fail: bool) -> Report {
        let cases = vec![
            CaseReport {
                id: "identity::recycled_pid_not_alive".into(),
                level: Level::Must,
                outcome: if fail {
                    Outcome::Fail(Failure {
                        expected: "state says stopped".into(),
                        observed: "state says running (pid 42)".into(),
                        evidence: vec!["impostor 42 received SIGKILL".into()],
                    })
                } else {
                    Outcome::Pass
                },
                duration_ms: 31,
                staging: None,
            },
            CaseReport {
                id: "identity::same_tick_impostor".into(),
                level: Level::Should,
                outcome: Outcome::Pass,
                duration_ms: 45,
                staging: Some("record-rewrite".into()),
            },
            CaseReport {
                id: "helper::signal_allowlist".into(),
                level: Level::Must,
                outcome: Outcome::NotApplicable {
                    why: "adapter does not declare capability `helper`".into(),
                },
                duration_ms: 0,
                staging: None,
            },
            CaseReport {
                id: "files::fifo_record".into(),
                level: Level::Must,
                outcome: Outcome::NotStaged {
                    why: "no <world> & \"userns\"".into(),
                },
                duration_ms: 1,
                staging: None,
            },
        ];
        Report::new(
            RuntimeInfo {
                name: name.into(),
                version: Some("0.1.0".into()),
                adapter: format!("fixtures/adapters/{name}.toml"),
            },
            vec![],
            1234,
            cases,
            Sensitivity {
                cases: 4,
                proven_to_fail: 2,
            },
        )
    }

    #[test]
    fn json_snapshot_and_round_trip() {
        let r = sample("refbox", true);
        let s = json(&r);
        insta::assert_snapshot!(s);
        let back: Report = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        assert!(r.failed());
        assert!(!sample("refbox", false).failed());
    }

    #[test]
    fn junit_snapshot() {
        insta::assert_snapshot!(junit(&sample("refbox", true)));
    }

    #[test]
    fn markdown_snapshot() {
        insta::assert_snapshot!(markdown(&sample("refbox", true)));
    }

    #[test]
    fn human_snapshot() {
        insta::assert_snapshot!(human(&sample("refbox", true)));
    }

    #[test]
    fn compare_with_evidence_names_each_failure() {
        let text = compare_with_evidence(&[sample("refbox", false), sample("flawbox", true)]);
        assert!(text.starts_with(&compare(&[
            sample("refbox", false),
            sample("flawbox", true)
        ])));
        assert!(
            text.contains("- **flawbox (0.1.0)**: 1 passed, 1 failed (1 MUST)"),
            "{text}"
        );
        assert!(
            text.contains(
                "- **flawbox** `identity::recycled_pid_not_alive` MUST: state says running (pid 42)"
            ),
            "{text}"
        );
        assert!(!text.contains("**refbox** `"), "{text}");
        assert_eq!(one_line("a|b\nc", 3), "a\\|…");
    }

    #[test]
    fn compare_snapshot() {
        insta::assert_snapshot!(compare(&[sample("refbox", false), sample("flawbox", true)]));
    }
}

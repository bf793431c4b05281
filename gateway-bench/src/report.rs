//! Human-readable output: an aligned text report or markdown ready to paste into the docs.

use std::fmt::Write as _;

use crate::load::PhaseStats;
use crate::stats::{LatencySummary, fmt_ms, fmt_ms_signed};
use crate::targets::{Verdict, fmt_mib};
use crate::{Report, RoundPair, Scenario};

/// Output flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Space-aligned columns for a terminal.
    Text,
    /// GitHub-flavoured markdown tables.
    Markdown,
}

/// Renders rows under headers; every row must have as many cells as there are headers.
pub fn table(format: Format, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    match format {
        Format::Markdown => {
            let _ = writeln!(out, "| {} |", headers.join(" | "));
            let _ = writeln!(out, "|{}", headers.iter().map(|_| "---|").collect::<String>());
            for row in rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
        }
        Format::Text => {
            let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
            for row in rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &mut dyn Iterator<Item = &str>| {
                let padded: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                padded.join("  ").trim_end().to_owned()
            };
            let _ = writeln!(out, "{}", line(&mut headers.iter().copied()));
            for row in rows {
                let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
            }
        }
    }
    out
}

/// One progress line per phase, printed to stderr while the benchmark runs.
pub fn phase_line(stats: &PhaseStats) -> String {
    let busy = if stats.competing_builds > 0 { "  BUSY (cargo/rustc running)" } else { "" };
    let other = stats.cpu.other_load_pct;
    format!(
        "{:<8} {:>9.1} req/s  p50 {}  p99 {}  ttfb p50 {}  failed {}  cpu gw/mock/client/redis {}/{}/{}/{} ms  other load {other:.0}%  gw rss {}{busy}",
        stats.target,
        stats.rps,
        fmt_ms(as_f64(stats.latency.p50_us)),
        fmt_ms(as_f64(stats.latency.p99_us)),
        fmt_ms(as_f64(stats.ttfb.p50_us)),
        stats.failed,
        stats.cpu.gateway_ms,
        stats.cpu.mock_ms,
        stats.cpu.client_ms,
        stats.cpu.redis_ms,
        fmt_mib(stats.gateway_rss_after),
    )
}

#[allow(clippy::cast_precision_loss)] // Microseconds and counts, far below 2^52.
fn as_f64(v: u64) -> f64 {
    v as f64
}

fn ms(v: u64) -> String {
    fmt_ms(as_f64(v))
}

/// CPU microseconds per successful request, or `-` when nothing succeeded.
fn cpu_per_request(cpu_ms: u64, ok: u64) -> String {
    if ok == 0 { "-".to_owned() } else { format!("{:.0} µs", as_f64(cpu_ms) * 1000.0 / as_f64(ok)) }
}

/// CPU used by other processes during the phase, as a share of the machine, plus a mark when
/// compilers were running at its end: the phase's figures are disturbed.
fn machine(p: &PhaseStats) -> String {
    let builds = if p.competing_builds > 0 { ", builds running" } else { "" };
    format!("{:.0}%{builds}", p.cpu.other_load_pct)
}

fn order(pair: &RoundPair, gateway: bool) -> &'static str {
    if pair.direct_first != gateway { "1st" } else { "2nd" }
}

fn phases(scenario: &Scenario) -> impl Iterator<Item = (&RoundPair, &PhaseStats)> {
    scenario.rounds.iter().flat_map(|r| [(r, &r.direct), (r, &r.gateway)])
}

fn latency_cells(l: &LatencySummary) -> [String; 4] {
    [ms(l.p50_us), ms(l.p90_us), ms(l.p99_us), ms(l.max_us)]
}

fn heading(out: &mut String, format: Format, text: &str) {
    let _ = match format {
        Format::Markdown => writeln!(out, "\n### {text}\n"),
        Format::Text => writeln!(out, "\n== {text}"),
    };
}

fn note(out: &mut String, format: Format, text: &str) {
    let _ = match format {
        Format::Markdown => writeln!(out, "\n{text}"),
        Format::Text => writeln!(out, "{text}"),
    };
}

/// The whole report.
pub fn render(report: &Report, format: Format) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let c = &report.config;
    // The Redis server's CPU, when it runs on this machine (it serves the gateway's state).
    let with_redis = report.redis.as_ref().is_some_and(|r| r.local);
    let _ = writeln!(
        out,
        "gateway-bench: {} CPUs ({}), {} RAM, Linux {}; load average {:.2} at start, {:.2} at end; \
         client runtime {} thread(s)",
        m.cpus,
        m.cpu_model,
        fmt_mib(m.mem_total_bytes),
        m.kernel,
        m.loadavg_start,
        m.loadavg_end,
        c.client_threads
    );
    let _ = writeln!(
        out,
        "Latency is measured from the scheduled send time (open loop). \"other load\": CPU used by \
         processes other than the gateway, the mock, this benchmark (and the local Redis server it \
         uses) during the phase, as a share of all CPUs; more than a few percent means the figures \
         are disturbed."
    );
    let _ = writeln!(out, "{}", gateway_setup(report));
    for (when, list) in [("start", &m.competing_builds_start), ("end", &m.competing_builds_end)] {
        if !list.is_empty() {
            let _ = writeln!(out, "WARNING: compiler processes running at {when}: {}", list.join(", "));
        }
    }

    if !report.fixed_rate.rounds.is_empty() {
        heading(
            &mut out,
            format,
            &format!(
                "Fixed rate: {} req/s, {} B non-streaming request, {} s per phase, {} s warm-up",
                c.rate, c.body_bytes, c.fixed_secs, c.warmup_secs
            ),
        );
        let rows: Vec<Vec<String>> = phases(&report.fixed_rate)
            .map(|(pair, p)| {
                let mut row = vec![
                    pair.round.to_string(),
                    p.target.clone(),
                    order(pair, p.target == "gateway").to_owned(),
                ];
                row.push(format!("{:.1}", p.rps));
                row.extend(latency_cells(&p.latency));
                row.push(p.failed.to_string());
                row.push(p.send_lag.map_or("-".to_owned(), |l| ms(l.p99_us)));
                row.push(cpu_per_request(p.cpu.gateway_ms, p.ok));
                row.push(cpu_per_request(p.cpu.mock_ms, p.ok));
                if with_redis {
                    row.push(cpu_per_request(p.cpu.redis_ms, p.ok));
                }
                row.push(fmt_mib(p.gateway_rss_after));
                row.push(machine(p));
                row
            })
            .collect();
        let mut headers = vec![
            "round",
            "target",
            "order",
            "req/s",
            "p50",
            "p90",
            "p99",
            "max",
            "failed",
            "send lag p99",
            "gw CPU/req",
            "mock CPU/req",
        ];
        if with_redis {
            headers.push("redis CPU/req");
        }
        headers.extend(["gw RSS after", "other load"]);
        out.push_str(&table(format, &headers, &rows));
        if let Some(added) = report.fixed_rate.added {
            note(
                &mut out,
                format,
                &format!(
                    "Added by the gateway (median over rounds of gateway − direct in the same round): p50 {}, p99 {}",
                    fmt_ms_signed(added.p50_us),
                    fmt_ms_signed(added.p99_us)
                ),
            );
        }
    }

    if !report.translated.rounds.is_empty() {
        heading(
            &mut out,
            format,
            &format!(
                "Translated: the same request as OpenAI chat (translated to the Anthropic provider and back) vs Anthropic passthrough, both through the gateway, {} req/s",
                c.rate
            ),
        );
        let rows: Vec<Vec<String>> = phases(&report.translated)
            .map(|(pair, p)| {
                let label = if p.target == "gateway" { "translated" } else { "passthrough" };
                let mut row = vec![pair.round.to_string(), label.to_owned()];
                row.push(format!("{:.1}", p.rps));
                row.extend(latency_cells(&p.latency));
                row.push(p.failed.to_string());
                row.push(cpu_per_request(p.cpu.gateway_ms, p.ok));
                row
            })
            .collect();
        out.push_str(&table(
            format,
            &["round", "traffic", "req/s", "p50", "p90", "p99", "max", "failed", "gw CPU/req"],
            &rows,
        ));
        if let Some(added) = report.translated.added {
            note(
                &mut out,
                format,
                &format!(
                    "Added by translation (median over rounds of translated − passthrough): p50 {}, p99 {}",
                    fmt_ms_signed(added.p50_us),
                    fmt_ms_signed(added.p99_us)
                ),
            );
        }
    }

    if !report.saturation.rounds.is_empty() {
        heading(
            &mut out,
            format,
            &format!(
                "Saturation: closed loop, {} connections, {} s per phase, {} s warm-up",
                c.connections, c.saturation_secs, c.warmup_secs
            ),
        );
        let rows: Vec<Vec<String>> = phases(&report.saturation)
            .map(|(pair, p)| {
                let mut row = vec![
                    pair.round.to_string(),
                    p.target.clone(),
                    order(pair, p.target == "gateway").to_owned(),
                ];
                row.push(format!("{:.0}", p.rps));
                row.push(ms(p.latency.p50_us));
                row.push(ms(p.latency.p99_us));
                row.push(p.failed.to_string());
                row.push(if p.target == "gateway" {
                    format!("{:.1}%", pair.rps_ratio * 100.0)
                } else {
                    String::new()
                });
                row.push(cpu_per_request(p.cpu.gateway_ms, p.ok));
                row.push(cpu_per_request(p.cpu.mock_ms, p.ok));
                row.push(cpu_per_request(p.cpu.client_ms, p.ok));
                if with_redis {
                    row.push(cpu_per_request(p.cpu.redis_ms, p.ok));
                }
                row.push(fmt_mib(p.gateway_rss_after));
                row.push(machine(p));
                row
            })
            .collect();
        let mut headers = vec![
            "round",
            "target",
            "order",
            "req/s",
            "p50",
            "p99",
            "failed",
            "gateway/direct",
            "gw CPU/req",
            "mock CPU/req",
            "client CPU/req",
        ];
        if with_redis {
            headers.push("redis CPU/req");
        }
        headers.extend(["gw RSS after", "other load"]);
        out.push_str(&table(format, &headers, &rows));
        if let Some(ratio) = report.saturation.rps_ratio {
            note(
                &mut out,
                format,
                &format!(
                    "Gateway throughput at saturation: {:.1}% of direct (median over rounds)",
                    ratio * 100.0
                ),
            );
        }
    }

    if !report.streaming.rounds.is_empty() {
        heading(
            &mut out,
            format,
            &format!(
                "Streaming: {} chunks ({} ms apart), {} req/s, {} s per phase",
                c.chunks, c.chunk_delay_ms, c.stream_rate, c.stream_secs
            ),
        );
        let rows: Vec<Vec<String>> = phases(&report.streaming)
            .map(|(pair, p)| {
                vec![
                    pair.round.to_string(),
                    p.target.clone(),
                    order(pair, p.target == "gateway").to_owned(),
                    format!("{:.1}", p.rps),
                    ms(p.ttfb.p50_us),
                    ms(p.ttfb.p99_us),
                    ms(p.latency.p50_us),
                    ms(p.latency.p99_us),
                    p.failed.to_string(),
                    machine(p),
                ]
            })
            .collect();
        out.push_str(&table(
            format,
            &[
                "round",
                "target",
                "order",
                "req/s",
                "TTFB p50",
                "TTFB p99",
                "last byte p50",
                "last byte p99",
                "failed",
                "other load",
            ],
            &rows,
        ));
        if let Some(added) = report.streaming.added {
            let last = report.streaming.added_last_byte.unwrap_or_default();
            note(
                &mut out,
                format,
                &format!(
                    "Added time to first byte: p50 {}, p99 {}; added time to last byte: p50 {}, p99 {}",
                    fmt_ms_signed(added.p50_us),
                    fmt_ms_signed(added.p99_us),
                    fmt_ms_signed(last.p50_us),
                    fmt_ms_signed(last.p99_us)
                ),
            );
        }
    }

    heading(&mut out, format, "gateway-server memory (RSS)");
    let r = &report.rss;
    out.push_str(&table(
        format,
        &["idle", "after fixed rate", "after saturation", "after streaming", "peak (VmHWM)", "mock at end"],
        &[vec![
            fmt_mib(r.idle),
            fmt_mib(r.after_fixed_rate),
            fmt_mib(r.after_saturation),
            fmt_mib(r.after_streaming),
            fmt_mib(r.peak),
            fmt_mib(r.mock_after),
        ]],
    ));

    note(
        &mut out,
        format,
        &format!(
            "Requests sent to the gateway in the whole run (warm-ups and the start-up probe included): {} \
             (its request_log should have as many rows; --keep-temp keeps the database)",
            report.gateway_requests_sent
        ),
    );

    heading(&mut out, format, "Targets");
    let rows: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|t| vec![t.verdict.label().to_owned(), t.name.clone(), t.target.clone(), t.measured.clone()])
        .collect();
    out.push_str(&table(format, &["", "target", "threshold", "measured"], &rows));

    let samples: Vec<String> =
        [&report.fixed_rate, &report.saturation, &report.streaming, &report.translated]
            .iter()
            .flat_map(|s| phases(s).map(move |(_, p)| (s, p)))
            .flat_map(|(s, p)| p.failure_samples.iter().map(move |f| format!("{} {}: {f}", s.name, p.target)))
            .collect();
    if !samples.is_empty() {
        heading(&mut out, format, "Failures (first samples per phase)");
        for sample in samples {
            let _ = writeln!(out, "- {sample}");
        }
    }
    note(&mut out, format, &verdict_summary(&report.targets));
    out
}

/// How the gateway ran: its limits and its state store.
fn gateway_setup(report: &Report) -> String {
    let limits = if report.config.limits {
        "limits on the bench user (never reached: every request is admitted and its spend tracked)"
    } else {
        "no limits"
    };
    let store = match &report.redis {
        None => "state in memory".to_owned(),
        Some(redis) => {
            let deleted = redis
                .keys_deleted
                .map_or_else(|| "not deleted".to_owned(), |n| format!("{n} key(s) deleted at the end"));
            let server = if redis.local {
                "server on this machine, its CPU reported per request"
            } else {
                "server not on this machine"
            };
            format!("state in Redis ({server}; key prefix {}, {deleted})", redis.prefix)
        }
    };
    format!("Gateway: {limits}; {store}.")
}

/// One line on the targets: met, missed, disturbed, not measured.
fn verdict_summary(targets: &[crate::targets::TargetCheck]) -> String {
    let count = |v: Verdict| targets.iter().filter(|t| t.verdict == v).count();
    let (missed, disturbed, absent) =
        (count(Verdict::Fail), count(Verdict::Disturbed), count(Verdict::NotMeasured));
    if missed + disturbed + absent == 0 {
        return "All targets met.".to_owned();
    }
    let mut parts = Vec::new();
    if missed > 0 {
        parts.push(format!("{missed} target(s) missed"));
    }
    if disturbed > 0 {
        parts.push(format!(
            "{disturbed} target(s) not judged: other processes used the CPUs during their phases (rerun on an idle machine)"
        ));
    }
    if absent > 0 {
        parts.push(format!("{absent} target(s) not measured"));
    }
    format!("{}.", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_table_aligns_columns() {
        let rows = vec![vec!["1".to_owned(), "direct".to_owned()], vec!["10".to_owned(), "gw".to_owned()]];
        let text = table(Format::Text, &["round", "target"], &rows);
        assert_eq!(text, "round  target\n1      direct\n10     gw\n");
    }

    #[test]
    fn markdown_table_has_a_separator_row() {
        let rows = vec![vec!["PASS".to_owned(), "0.1 ms".to_owned()]];
        let md = table(Format::Markdown, &["", "measured"], &rows);
        assert_eq!(md, "|  | measured |\n|---|---|\n| PASS | 0.1 ms |\n");
    }

    #[test]
    fn every_markdown_row_has_as_many_cells_as_its_header() {
        let md = render(&crate::fixtures::report(), Format::Markdown);
        let mut header_cells = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                header_cells = None;
                continue;
            }
            let cells = line.matches('|').count();
            match header_cells {
                None => header_cells = Some(cells),
                Some(expected) => assert_eq!(cells, expected, "row `{line}` in\n{md}"),
            }
        }
        assert!(md.contains("### Targets"));
        assert!(md.contains("- streaming gateway: HTTP 502: upstream gone"), "{md}");
        assert!(md.contains("| FAIL | requests that failed | 0 | 1 of 120 |"), "{md}");
    }

    #[test]
    fn text_report_states_the_added_latency_and_ratio() {
        let text = render(&crate::fixtures::report(), Format::Text);
        assert!(text.contains("p50 +0.110 ms, p99 +0.220 ms"), "{text}");
        assert!(text.contains("45.0% of direct"), "{text}");
    }

    #[test]
    fn verdict_summary_separates_misses_from_disturbed_figures() {
        use crate::targets::TargetCheck;
        let check = |verdict| TargetCheck {
            name: String::new(),
            target: String::new(),
            measured: String::new(),
            verdict,
        };
        assert_eq!(verdict_summary(&[check(Verdict::Pass)]), "All targets met.");
        let summary =
            verdict_summary(&[check(Verdict::Fail), check(Verdict::Disturbed), check(Verdict::Pass)]);
        assert!(summary.starts_with("1 target(s) missed; 1 target(s) not judged"), "{summary}");
    }

    #[test]
    fn header_names_the_limits_and_the_state_store() {
        let mut report = crate::fixtures::report();
        let text = render(&report, Format::Text);
        assert!(text.contains("Gateway: no limits; state in memory."), "{text}");

        report.config.limits = true;
        report.redis = Some(crate::RedisReport {
            prefix: "gateway-bench-1-a:".to_owned(),
            local: true,
            keys_deleted: Some(7),
        });
        let text = render(&report, Format::Markdown);
        assert!(text.contains("| gw CPU/req | mock CPU/req | redis CPU/req | gw RSS after |"), "{text}");
        assert!(text.contains("Gateway: limits on the bench user"), "{text}");
        assert!(
            text.contains("state in Redis (server on this machine, its CPU reported per request; key prefix gateway-bench-1-a:, 7 key(s) deleted at the end)"),
            "{text}"
        );
    }

    #[test]
    fn skipped_scenarios_have_no_section() {
        let mut report = crate::fixtures::report();
        report.saturation.rounds.clear();
        let text = render(&report, Format::Text);
        assert!(!text.contains("== Saturation"), "{text}");
        assert!(text.contains("== Fixed rate"), "{text}");
    }

    #[test]
    fn cpu_per_request_in_microseconds() {
        assert_eq!(cpu_per_request(250, 10_000), "25 µs");
        assert_eq!(cpu_per_request(250, 0), "-");
    }
}

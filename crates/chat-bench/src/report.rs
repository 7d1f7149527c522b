//! `chat-bench report`: the scenario summaries of one bench run as `report.md` (tables),
//! `summary.json` (every number, with machine, commit and settings) and two SVG plots.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::metrics::Delta;

/// `chat-bench report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// The bench directory: scenario summaries are read from `<dir>/scenarios/*.json`.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// The machine, recorded next to the numbers.
    #[arg(long, default_value = "unknown")]
    machine: String,
    /// The commit measured.
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// The date of the run (`YYYY-MM-DD`).
    #[arg(long, default_value = "unknown")]
    date: String,
    /// The settings (dataset, durations, connections), recorded next to the numbers.
    #[arg(long, default_value = "")]
    settings: String,
}

struct Row {
    name: String,
    summary: Value,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The server's counts of a summary, read back through the type that wrote them.
fn server_delta(summary: &Value) -> Delta {
    summary
        .get("server")
        .and_then(|v| Delta::deserialize(v).ok())
        .unwrap_or_default()
}

fn hit_ratios(server: &Delta) -> String {
    let mut parts = Vec::new();
    for tier in ["memory", "l1", "l2", "upstash"] {
        if let Some(r) = server.hit_ratio(tier) {
            parts.push(format!("{tier} {:.0}%", r * 100.0));
        }
    }
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(", ")
    }
}

/// One of the server's counts, or "–" when the server could not be read (not a zero it never
/// reported).
fn measured_count(server: &Delta, count: impl Fn(&Delta) -> u64) -> String {
    if server.measured {
        count(server).to_string()
    } else {
        "–".to_owned()
    }
}

pub(crate) fn write(args: &ReportArgs) -> anyhow::Result<()> {
    let dir = args.dir.join("scenarios");
    let mut rows = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let summary: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        rows.push(Row { name, summary });
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "no scenario summaries in {}",
        dir.display()
    );

    let mut md = String::new();
    let _ = writeln!(md, "# chat-api benchmark report\n");
    let _ = writeln!(
        md,
        "- machine: {}\n- commit: {}\n- date: {}\n- settings: {}\n",
        args.machine, args.commit, args.date, args.settings
    );
    let _ = writeln!(
        md,
        "| scenario | mode | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | cache hit ratio | DB queries / 1k req | Upstash requests / 1k req | Upstash commands / 1k req |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let s = &row.summary;
        if s.get("callers").is_some() {
            continue; // herd summaries have their own table
        }
        let total = &s["total"];
        let requests = f(&total["requests"]).max(1.0);
        let server = server_delta(s);
        // A server without a stats document (the bare handler) has no counts: "–", not 0.
        let per_k = |v: u64| {
            if server.measured {
                format!("{:.1}", v as f64 / requests * 1000.0)
            } else {
                "–".to_owned()
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} |",
            row.name,
            s["mode"].as_str().unwrap_or("?"),
            f(&total["rps"]),
            f(&total["p50_ms"]),
            f(&total["p95_ms"]),
            f(&total["p99_ms"]),
            f(&total["max_ms"]),
            total["errors"],
            hit_ratios(&server),
            per_k(server.db_queries),
            per_k(server.upstash_requests),
            per_k(server.upstash_commands),
        );
    }
    // The backplane's PUBLISHes go through its own client, not the cache tiers the table counts.
    let buses: Vec<String> = rows
        .iter()
        .filter(|r| r.summary.get("callers").is_none())
        .filter_map(|row| {
            let server = server_delta(&row.summary);
            let requests = f(&row.summary["total"]["requests"]).max(1.0);
            (server.backplane_published > 0).then(|| {
                format!(
                    "{}: {} backplane messages ({:.1} / 1k req)",
                    row.name,
                    server.backplane_published,
                    server.backplane_published as f64 / requests * 1000.0
                )
            })
        })
        .collect();
    if !buses.is_empty() {
        let _ = writeln!(
            md,
            "\nNot in the Upstash columns: messages the instances' backplane published, each in at \
             most one billed `PUBLISH` (batches share one). {}.",
            buses.join("; ")
        );
    }
    let herds: Vec<&Row> = rows
        .iter()
        .filter(|r| r.summary.get("callers").is_some())
        .collect();
    if !herds.is_empty() {
        let _ = writeln!(md, "\n## Thundering herd\n");
        let _ = writeln!(
            md,
            "| scenario | concurrent requests | database queries | p50 ms | p99 ms | errors |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for row in herds {
            let s = &row.summary;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} | {:.2} | {} |",
                row.name,
                s["callers"],
                measured_count(&server_delta(s), |d| d.db_queries),
                f(&s["latency"]["p50_ms"]),
                f(&s["latency"]["p99_ms"]),
                s["latency"]["errors"],
            );
        }
    }
    let outages: Vec<&Row> = rows
        .iter()
        .filter(|r| r.summary.get("outage").is_some() || r.summary.get("check").is_some())
        .collect();
    if !outages.is_empty() {
        let _ = writeln!(md, "\n## Redis outage\n");
        let _ = writeln!(
            md,
            "redis-server, persisting every write, is killed (`kill -9`) at the start of the window \
             and restarted with its data at its end, so pages cached before the outage are still in \
             it. Window latencies are of requests sent in it; stale reads are latest-page reads that \
             miss a post acknowledged before they were sent, of the reads sent after a post to \
             their channel.\n"
        );
        let _ = writeln!(
            md,
            "| scenario | window s | requests in window | p50 ms | p99 ms | max ms | failed (whole run) | acknowledged posts | checked reads | reads after a post | stale reads |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for row in outages {
            let s = &row.summary;
            let w = &s["outage"];
            let c = &s["check"];
            let _ = writeln!(
                md,
                "| {} | {}..{} | {} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} |",
                row.name,
                w["from_s"],
                w["to_s"],
                w["latency"]["requests"],
                f(&w["latency"]["p50_ms"]),
                f(&w["latency"]["p99_ms"]),
                f(&w["latency"]["max_ms"]),
                s["total"]["errors"],
                c["acknowledged_posts"],
                c["checked_reads"],
                c["held_reads"],
                c["stale_reads"],
            );
        }
    }
    let _ = writeln!(
        md,
        "\nPlots: `latency.svg`, `throughput.svg`. Every number: `summary.json`."
    );
    std::fs::write(args.dir.join("report.md"), &md)?;

    let summary = json!({
        "machine": args.machine,
        "commit": args.commit,
        "date": args.date,
        "settings": args.settings,
        "scenarios": rows.iter().map(|r| (r.name.clone(), r.summary.clone())).collect::<serde_json::Map<_, _>>(),
    });
    crate::write_json(&args.dir.join("summary.json"), &summary)?;

    let runs: Vec<&Row> = rows
        .iter()
        .filter(|r| r.summary.get("total").is_some())
        .collect();
    std::fs::write(args.dir.join("latency.svg"), latency_svg(&runs))?;
    std::fs::write(args.dir.join("throughput.svg"), throughput_svg(&runs))?;
    eprintln!("wrote {}", args.dir.join("report.md").display());
    Ok(())
}

const COLORS: [&str; 4] = ["#4c78a8", "#f58518", "#54a24b", "#e45756"];

/// p50/p95/p99/max per scenario, grouped bars on a log scale.
fn latency_svg(rows: &[&Row]) -> String {
    let (w, h, left, bottom, top) = (900.0, 420.0, 70.0, 110.0, 40.0);
    let plot_h = h - bottom - top;
    let group_w = (w - left - 20.0) / rows.len().max(1) as f64;
    let keys = ["p50_ms", "p95_ms", "p99_ms", "max_ms"];
    let max = rows
        .iter()
        .map(|r| f(&r.summary["total"]["max_ms"]))
        .fold(1.0_f64, f64::max);
    let (lo, hi) = (0.01_f64.log10(), max.log10().ceil().max(0.0) + 0.0);
    let y = |ms: f64| top + plot_h * (1.0 - (ms.max(0.01).log10() - lo) / (hi - lo).max(1e-9));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><text x="{}" y="20" text-anchor="middle" font-size="15">Latency per scenario (ms, log scale)</text>"#,
        w / 2.0
    );
    let mut decade = lo.ceil();
    while decade <= hi {
        let yy = y(10f64.powf(decade));
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - 20.0,
            left - 6.0,
            yy + 4.0,
            10f64.powf(decade)
        );
        decade += 1.0;
    }
    for (i, row) in rows.iter().enumerate() {
        let x0 = left + group_w * i as f64;
        let bar_w = group_w / (keys.len() as f64 + 1.0);
        for (k, key) in keys.iter().enumerate() {
            let v = f(&row.summary["total"][key]);
            let yy = y(v);
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {key}: {v:.2} ms</title></rect>"#,
                x0 + bar_w * (k as f64 + 0.5),
                bar_w * 0.9,
                (top + plot_h - yy).max(0.0),
                COLORS[k],
                row.name
            );
        }
        let _ = write!(
            svg,
            r#"<text transform="translate({:.1},{:.1}) rotate(-35)" text-anchor="end">{}</text>"#,
            x0 + group_w / 2.0,
            top + plot_h + 14.0,
            row.name
        );
    }
    for (k, key) in keys.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            left + 90.0 * k as f64,
            h - 14.0,
            COLORS[k],
            left + 90.0 * k as f64 + 14.0,
            h - 5.0,
            key.trim_end_matches("_ms")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Requests per second per scenario.
fn throughput_svg(rows: &[&Row]) -> String {
    let (w, h, left, bottom, top) = (900.0, 380.0, 70.0, 90.0, 40.0);
    let plot_h = h - bottom - top;
    let max = rows
        .iter()
        .map(|r| f(&r.summary["total"]["rps"]))
        .fold(1.0_f64, f64::max);
    let bar_w = (w - left - 20.0) / rows.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><text x="{}" y="20" text-anchor="middle" font-size="15">Throughput per scenario (requests/s)</text>"#,
        w / 2.0
    );
    for (i, row) in rows.iter().enumerate() {
        let v = f(&row.summary["total"]["rps"]);
        let bh = plot_h * v / max;
        let x = left + bar_w * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{v:.0}</text><text transform="translate({:.1},{:.1}) rotate(-35)" text-anchor="end">{}</text>"#,
            x + bar_w * 0.1,
            top + plot_h - bh,
            bar_w * 0.8,
            COLORS[0],
            x + bar_w / 2.0,
            top + plot_h - bh - 4.0,
            x + bar_w / 2.0,
            top + plot_h + 14.0,
            row.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scenario whose server had no stats document (the bare handler, a server that could not be
    /// read) shows "–" for every server count, never a zero it did not measure.
    #[test]
    fn unmeasured_server_counts_are_a_dash_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let scenarios = dir.path().join("scenarios");
        std::fs::create_dir(&scenarios).unwrap();
        let total = json!({"requests": 1000, "rps": 100.0, "p50_ms": 1.0, "p95_ms": 2.0,
                           "p99_ms": 3.0, "max_ms": 4.0, "errors": 0});
        let measured = Delta {
            measured: true,
            db_queries: 500,
            ..Delta::default()
        };
        for (name, server) in [("a-measured", measured), ("b-unmeasured", Delta::default())] {
            let summary = json!({"mode": "closed", "total": total, "server": server});
            std::fs::write(scenarios.join(format!("{name}.json")), summary.to_string()).unwrap();
        }
        let herd = json!({"callers": 10, "latency": {"p50_ms": 1.0, "p99_ms": 2.0, "errors": 0},
                          "server": Delta::default()});
        std::fs::write(scenarios.join("c-herd.json"), herd.to_string()).unwrap();

        write(&ReportArgs {
            dir: dir.path().to_owned(),
            machine: "test".into(),
            commit: "test".into(),
            date: "test".into(),
            settings: String::new(),
        })
        .unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        let row = |name: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_else(|| panic!("no row {name} in\n{md}"))
                .to_owned()
        };
        assert!(
            row("a-measured").ends_with("| 500.0 | 0.0 | 0.0 |"),
            "{}",
            row("a-measured")
        );
        assert!(
            row("b-unmeasured").ends_with("| – | – | – | – |"),
            "{}",
            row("b-unmeasured")
        );
        assert!(
            row("c-herd").starts_with("| c-herd | 10 | – |"),
            "{}",
            row("c-herd")
        );
    }
}

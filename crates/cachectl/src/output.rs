//! Everything written to stdout: human text (tables, colour only on a terminal and without
//! `NO_COLOR`) or, with `--json`, machine-readable JSON and nothing else.
//!
//! Writes go through `io::Result` instead of `println!`, which panics when the reader of a pipe
//! goes away; the error travels up and `main` exits quietly on a broken pipe.

use std::{
    fmt::Write as _,
    io::{self, IsTerminal as _, Write},
    time::Duration,
};

use serde::Serialize;

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
    style: Style,
}

impl Output {
    /// JSON when `json`; otherwise human text, coloured if stdout is a terminal and `NO_COLOR`
    /// is unset (<https://no-color.org>).
    pub(crate) fn new(json: bool) -> Output {
        let color = !json
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Output {
            json,
            style: Style { color },
        }
    }

    /// Whether results are JSON.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// The colours to use (none in JSON mode or off a terminal).
    pub(crate) fn style(&self) -> Style {
        self.style
    }

    /// Writes `value` as one line of JSON: a whole document, or one line of a JSON-lines stream.
    pub(crate) fn json_line(&self, value: &impl Serialize) -> anyhow::Result<()> {
        // Serialized first: serde_json wraps a write error so that a broken pipe no longer shows
        // as an `io::Error` in the chain (and `main` would report it instead of exiting quietly).
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        let mut out = io::stdout().lock();
        out.write_all(&line)?;
        out.flush()?;
        Ok(())
    }

    /// Writes human text as is (the caller ends lines).
    pub(crate) fn text(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Writes raw bytes (`get --raw`).
    pub(crate) fn bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }
}

/// A note for the operator on stderr (summaries, prompts): never mixed into results.
pub(crate) fn note(text: &str) {
    // Nobody to tell if stderr is gone.
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// ANSI colours, or plain text when off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    color: bool,
}

impl Style {
    /// No colour at all.
    #[cfg(test)]
    pub(crate) fn plain() -> Style {
        Style { color: false }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn good(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn bad(self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub(crate) fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }

    pub(crate) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// A cell's colour, applied after padding so escapes do not break alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Plain,
    Good,
    Bad,
}

/// A text table with a header row; numbers are right-aligned.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows.push(cells);
    }

    /// A row of plain cells.
    pub(crate) fn plain_row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|c| (c.into(), Tone::Plain)).collect());
    }

    pub(crate) fn render(&self, style: Style) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, (cell, _)) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let numeric = |i: usize| {
            self.rows.iter().all(|row| {
                row.get(i).is_none_or(|(c, _)| {
                    c == "-"
                        || c.trim_end_matches(['%', 's'])
                            .replace([',', '.'], "")
                            .parse::<u64>()
                            .is_ok()
                })
            })
        };
        let align: Vec<bool> = (0..columns).map(numeric).collect();
        let mut out = String::new();
        let header: Vec<String> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| style.bold(&pad(h, widths[i], align[i])))
            .collect();
        let _ = writeln!(out, "{}", header.join("  ").trim_end());
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .take(columns)
                .map(|(i, (cell, tone))| {
                    let padded = pad(cell, widths[i], align[i]);
                    match tone {
                        Tone::Plain => padded,
                        Tone::Good => style.good(&padded),
                        Tone::Bad => style.bad(&padded),
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }
}

fn pad(text: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(text.chars().count()));
    if right {
        format!("{fill}{text}")
    } else {
        format!("{text}{fill}")
    }
}

/// `1.23 ms`, `850 µs`, `2.5 s`.
pub(crate) fn millis(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros} µs")
    } else if micros < 100_000 {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else if micros < 1_000_000 {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Milliseconds as a float, for JSON.
pub(crate) fn ms_f64(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Bytes shown as text: UTF-8 as is, anything else with `\xNN` escapes (like `redis-cli`).
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii_control() && c != '\n' && c != '\t' {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            } else if c.is_control() && !c.is_ascii() {
                let _ = write!(out, "{}", c.escape_unicode());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A key for one line of output: escaped so a newline in a key cannot forge another line.
pub(crate) fn escape_key(bytes: &[u8]) -> String {
    escape_bytes(bytes)
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut table = Table::new(&["tier", "hits"]);
        table.plain_row(["l1", "1,200"]);
        table.plain_row(["l2-long", "3"]);
        assert_eq!(
            table.render(Style::plain()),
            "tier      hits\nl1       1,200\nl2-long      3\n"
        );
    }

    #[test]
    fn binary_is_escaped_and_text_kept() {
        assert_eq!(escape_bytes(b"caf\xc3\xa9"), "café");
        assert_eq!(escape_bytes(b"\x00CZ\x01\xff"), "\\x00CZ\\x01\\xff");
        assert_eq!(escape_key(b"a\nb"), "a\\nb");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(millis(Duration::from_micros(850)), "850 µs");
        assert_eq!(millis(Duration::from_micros(1_234)), "1.23 ms");
        assert_eq!(ms_f64(Duration::from_micros(1_234)), 1.234);
    }
}

//! `aiopsd logs templates FILE [--assign OUT]`: the offline side of the
//! miner, and how its quality is measured on any plain log file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::{TemplateId, TemplateMiner};

/// What one run of the tool saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MineSummary {
    /// Lines read.
    pub lines: u64,
    /// Lines that were not valid UTF-8 and were decoded lossily (invalid
    /// bytes become U+FFFD) instead of failing the run.
    pub lossy_lines: u64,
}

/// Mines `input` line by line (one message per line, `\n` or `\r\n`),
/// calling `on_line` with each line's template id in input order.
///
/// I/O errors name the file and the line; bad UTF-8 is never an error.
pub fn mine_file(
    miner: &mut TemplateMiner,
    path: &Path,
    mut on_line: impl FnMut(u64, TemplateId) -> anyhow::Result<()>,
) -> anyhow::Result<MineSummary> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::with_capacity(512);
    let mut summary = MineSummary::default();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("{}:{}: read failed", path.display(), summary.lines + 1))?;
        if n == 0 {
            break;
        }
        summary.lines += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line = String::from_utf8_lossy(&buf);
        if let std::borrow::Cow::Owned(_) = line {
            summary.lossy_lines += 1;
        }
        on_line(summary.lines, miner.add(&line))?;
    }
    Ok(summary)
}

/// Runs the command: prints `count<TAB>id<TAB>template`, most frequent
/// first, to stdout; with `assign`, writes one template id per input line
/// to that file; a summary goes to stderr.
pub fn templates_command(file: &Path, assign: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut miner = TemplateMiner::default();
    let mut out = match assign {
        Some(p) => Some((
            BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            ),
            p,
        )),
        None => None,
    };
    let summary = mine_file(&mut miner, file, |n, id| {
        if let Some((w, p)) = out.as_mut() {
            writeln!(w, "{id}").with_context(|| format!("{}:{n}: write failed", p.display()))?;
        }
        Ok(())
    })?;
    if let Some((mut w, p)) = out {
        w.flush()
            .with_context(|| format!("{}: write failed", p.display()))?;
    }
    let stdout = std::io::stdout();
    let mut stdout = BufWriter::new(stdout.lock());
    for t in miner.templates() {
        writeln!(stdout, "{}\t{}\t{}", t.count, t.id, t.text).context("writing to stdout")?;
    }
    stdout.flush().context("writing to stdout")?;
    eprintln!(
        "{}: {} lines, {} templates, {} lines not UTF-8 (decoded lossily)",
        file.display(),
        summary.lines,
        miner.len(),
        summary.lossy_lines
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_handles_crlf_and_bad_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(
            &path,
            b"port 22 open\r\nport 23 open\n\xff\xfe bad\nno newline",
        )
        .unwrap();
        let mut miner = TemplateMiner::default();
        let mut ids = Vec::new();
        let s = mine_file(&mut miner, &path, |_, id| {
            ids.push(id);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            s,
            MineSummary {
                lines: 4,
                lossy_lines: 1
            }
        );
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[0], ids[1]);
        assert_eq!(miner.template(ids[0]).unwrap().text, "port <*> open");
    }

    #[test]
    fn missing_file_is_named() {
        let mut miner = TemplateMiner::default();
        let err =
            mine_file(&mut miner, Path::new("/nonexistent/x.log"), |_, _| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/x.log"), "{err:#}");
    }
}

//! Reading a corpus laid out like NAB's: `DIR/<category>/<file>.csv` with
//! `timestamp,value` rows, a labels file like `combined_windows.json`
//! (`{"<category>/<file>.csv": [["start", "end"], ...]}`), a profiles
//! file like `config/profiles.json`, and detector outputs in NAB's
//! results layout.
//!
//! Every error names the file, and the line or field, so a broken corpus
//! is fixed in one look rather than by bisecting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::nab::{CostMatrix, Profile};
use super::BacktestError;

/// One labelled series of the corpus.
#[derive(Debug, Clone)]
pub struct Series {
    /// `<category>/<file>.csv`, the key in the labels file.
    pub name: String,
    /// The folder it sits in (NAB's category).
    pub category: String,
    /// Row timestamps, milliseconds since the Unix epoch (UTC, as written).
    pub timestamps: Vec<i64>,
    /// The timestamp column as written, for the results files.
    pub raw_timestamps: Vec<String>,
    /// Values.
    pub values: Vec<f64>,
    /// Labelled windows as inclusive row index ranges, sorted.
    pub windows: Vec<(usize, usize)>,
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (NAB's timestamps; a `T` is
/// accepted as the separator) into milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next()?.parse().ok()?;
    let ss: i64 = t.next().unwrap_or("0").parse().ok()?;
    if t.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let f3: String = frac.chars().chain("000".chars()).take(3).collect();
        f3.parse().ok()?
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

fn read(path: &Path) -> Result<String, BacktestError> {
    std::fs::read_to_string(path).map_err(|source| BacktestError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, line: usize, message: impl Into<String>) -> BacktestError {
    BacktestError::Parse {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Timestamps as written, parsed (ms), and the values of a two-column CSV.
pub type Columns = (Vec<String>, Vec<i64>, Vec<f64>);

/// Reads a two-column CSV with a header whose first column is `timestamp`
/// and whose second is `value_column`: timestamps as written and parsed,
/// and the values.
pub fn read_two_columns(path: &Path, value_column: &str) -> Result<Columns, BacktestError> {
    let text = read(path)?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or("");
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let ts_col = cols.iter().position(|c| *c == "timestamp");
    let v_col = cols.iter().position(|c| *c == value_column);
    let (Some(ts_col), Some(v_col)) = (ts_col, v_col) else {
        return Err(bad(
            path,
            1,
            format!("header must have columns `timestamp` and `{value_column}`, got `{header}`"),
        ));
    };
    let (mut raw, mut ts, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let t_raw = fields
            .get(ts_col)
            .ok_or_else(|| bad(path, line_no, "missing field `timestamp`"))?;
        let v_raw = fields
            .get(v_col)
            .ok_or_else(|| bad(path, line_no, format!("missing field `{value_column}`")))?;
        let t = parse_timestamp(t_raw).ok_or_else(|| {
            bad(
                path,
                line_no,
                format!("field `timestamp`: `{t_raw}` is not `YYYY-MM-DD HH:MM:SS`"),
            )
        })?;
        let v: f64 = v_raw
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                bad(
                    path,
                    line_no,
                    format!("field `{value_column}`: `{v_raw}` is not a finite number"),
                )
            })?;
        // Not required to increase: NAB's own files repeat an hour at a
        // daylight-saving change (ec2_disk_write_bytes_1ef3de.csv), and NAB
        // scores them by row order.
        raw.push((*t_raw).to_string());
        ts.push(t);
        vs.push(v);
    }
    if ts.is_empty() {
        return Err(bad(path, 1, "no data rows"));
    }
    Ok((raw, ts, vs))
}

/// Labels file: series name → windows as `[start, end]` timestamp strings.
pub type Labels = BTreeMap<String, Vec<(String, String)>>;

/// Reads a labels file in NAB's combined-windows format.
pub fn read_labels(path: &Path) -> Result<Labels, BacktestError> {
    let text = read(path)?;
    serde_json::from_str(&text).map_err(|e| {
        bad(
            path,
            e.line(),
            format!("{e} (expected {{\"<category>/<file>.csv\": [[\"start\", \"end\"], ...]}})"),
        )
    })
}

/// Reads a profiles file in NAB's `profiles.json` format.
pub fn read_profiles(path: &Path) -> Result<Vec<Profile>, BacktestError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        cost_matrix: CostMatrix,
    }
    let text = read(path)?;
    let map: BTreeMap<String, Entry> =
        serde_json::from_str(&text).map_err(|e| bad(path, e.line(), e.to_string()))?;
    Ok(map
        .into_iter()
        .map(|(name, e)| Profile {
            name,
            costs: e.cost_matrix,
        })
        .collect())
}

/// Every `*.csv` under `dir/<category>/`, sorted by name, with its labels.
///
/// A data file without a labels entry, or a window boundary that is not a
/// row timestamp of its file, is an error (NAB refuses both too).
pub fn load_corpus(
    dir: &Path,
    labels: &Labels,
    labels_path: &Path,
) -> Result<Vec<Series>, BacktestError> {
    let mut files: Vec<(String, String, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| BacktestError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for cat in entries.flatten() {
        let cat_path = cat.path();
        if !cat_path.is_dir() {
            continue;
        }
        let category = cat.file_name().to_string_lossy().into_owned();
        let inner = std::fs::read_dir(&cat_path).map_err(|source| BacktestError::Read {
            path: cat_path.clone(),
            source,
        })?;
        for f in inner.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "csv") {
                let name = format!("{category}/{}", f.file_name().to_string_lossy());
                files.push((name, category.clone(), p));
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(BacktestError::EmptyCorpus(dir.to_path_buf()));
    }
    let mut out = Vec::with_capacity(files.len());
    for (name, category, path) in files {
        let (raw_timestamps, timestamps, values) = read_two_columns(&path, "value")?;
        let label = labels.get(&name).ok_or_else(|| BacktestError::Label {
            path: labels_path.to_path_buf(),
            message: format!("no entry for data file `{name}`"),
        })?;
        let windows = windows_to_rows(&name, label, &timestamps, labels_path)?;
        out.push(Series {
            name,
            category,
            timestamps,
            raw_timestamps,
            values,
            windows,
        });
    }
    Ok(out)
}

/// Window boundaries (timestamp strings) → inclusive row index ranges.
pub fn windows_to_rows(
    name: &str,
    windows: &[(String, String)],
    timestamps: &[i64],
    labels_path: &Path,
) -> Result<Vec<(usize, usize)>, BacktestError> {
    let find = |s: &str| -> Result<usize, BacktestError> {
        let t = parse_timestamp(s).ok_or_else(|| BacktestError::Label {
            path: labels_path.to_path_buf(),
            message: format!("`{name}`: window boundary `{s}` is not a timestamp"),
        })?;
        // First matching row, as NAB's `timestamps.index(...)`.
        timestamps
            .iter()
            .position(|&r| r == t)
            .ok_or_else(|| BacktestError::Label {
                path: labels_path.to_path_buf(),
                message: format!("`{name}`: window boundary `{s}` is not a row of the data file"),
            })
    };
    let mut rows = Vec::with_capacity(windows.len());
    for (a, b) in windows {
        let (l, r) = (find(a)?, find(b)?);
        if r < l {
            return Err(BacktestError::Label {
                path: labels_path.to_path_buf(),
                message: format!("`{name}`: window `{a}`..`{b}` ends before it starts"),
            });
        }
        rows.push((l, r));
    }
    rows.sort();
    if rows.windows(2).any(|w| w[1].0 <= w[0].1) {
        return Err(BacktestError::Label {
            path: labels_path.to_path_buf(),
            message: format!("`{name}`: windows overlap"),
        });
    }
    Ok(rows)
}

/// Reads one detector's results file for `series` in NAB's results layout
/// (`<results>/<detector>/<category>/<detector>_<file>.csv`, column
/// `anomaly_score`), checking it has one row per data row.
pub fn read_results(
    results_dir: &Path,
    detector: &str,
    series: &Series,
) -> Result<Vec<f64>, BacktestError> {
    let file = series.name.rsplit('/').next().unwrap_or(&series.name);
    let path = results_dir
        .join(detector)
        .join(&series.category)
        .join(format!("{detector}_{file}"));
    let (_, ts, scores) = read_two_columns(&path, "anomaly_score")?;
    if ts.len() != series.timestamps.len() {
        return Err(bad(
            &path,
            ts.len() + 1,
            format!(
                "{} rows, but the data file has {}",
                ts.len(),
                series.timestamps.len()
            ),
        ));
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_and_without_fraction() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(
            parse_timestamp("2014-04-10 07:15:00.000000"),
            parse_timestamp("2014-04-10 07:15:00")
        );
        assert_eq!(
            parse_timestamp("2014-07-01 00:00:00"),
            Some(1_404_172_800_000)
        );
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn bad_value_names_file_line_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.csv");
        std::fs::write(
            &p,
            "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,abc\n",
        )
        .expect("write");
        let e = read_two_columns(&p, "value")
            .expect_err("bad value")
            .to_string();
        assert!(
            e.contains("x.csv") && e.contains("line 3") && e.contains("`value`"),
            "{e}"
        );
    }

    #[test]
    fn malformed_labels_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("labels.json");
        std::fs::write(&p, "{\n \"a/b.csv\": [[\"x\"]]\n}").expect("write");
        let e = read_labels(&p).expect_err("bad labels").to_string();
        assert!(e.contains("labels.json") && e.contains("line 2"), "{e}");
    }
}

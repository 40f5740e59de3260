//! Detector presets: named, versioned detector configurations per kind of
//! metric, stored as YAML in `models/presets/<name>.yaml`.
//!
//! Why files and not code: tuning a preset is a data change that can be
//! reviewed, diffed and backtested (`aiopsd backtest --preset NAME`)
//! without a release; the `version` field lets aiopsd refuse a file
//! written for a format it does not understand instead of misreading it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DetectorSpec;

/// The preset file format this build reads.
pub const PRESET_FORMAT_VERSION: u32 = 1;

/// One preset file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Format version; must be [`PRESET_FORMAT_VERSION`].
    pub version: u32,
    /// What kind of metric it suits and why its tunables are what they are.
    #[serde(default)]
    pub description: String,
    /// The detector and its tunables, as in a signal's `detector:` block.
    pub detector: DetectorSpec,
}

/// Why a preset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// The file could not be read.
    #[error("{}: cannot read preset: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid preset; the message names the field.
    #[error("{}: invalid preset: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the field path (and line when known).
        message: String,
    },
}

/// Where a preset named `name` lives: `name` itself if it is a path to a
/// `.yaml` file, else `<dir>/<name>.yaml`.
pub fn preset_path(dir: &Path, name: &str) -> PathBuf {
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        PathBuf::from(name)
    } else {
        dir.join(format!("{name}.yaml"))
    }
}

/// Parses and validates preset YAML; `path` only names the source in errors.
pub fn parse_preset(text: &str, path: &Path) -> Result<Preset, PresetError> {
    let invalid = |message: String| PresetError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    // YAML → JSON tree → typed, as the config loader does, so errors name
    // the field path.
    let tree: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| invalid(format!("YAML syntax: {e}")))?;
    let preset: Preset = match serde_path_to_error::deserialize(tree) {
        Ok(p) => p,
        Err(e) => {
            let field = e.path().to_string();
            return Err(invalid(format!("{field}: {}", e.into_inner())));
        }
    };
    if preset.version != PRESET_FORMAT_VERSION {
        return Err(invalid(format!(
            "version: this aiopsd reads format {PRESET_FORMAT_VERSION}, the file is {}",
            preset.version
        )));
    }
    preset
        .detector
        .validate()
        .map_err(|e| invalid(format!("detector.{e}")))?;
    Ok(preset)
}

/// The presets shipped in `models/presets/`, built into the binary so a
/// signal can name one (`preset: latency`) without the files installed.
pub const BUILTIN_PRESETS: &[(&str, &str)] = &[
    ("counter", include_str!("../../models/presets/counter.yaml")),
    ("cpu", include_str!("../../models/presets/cpu.yaml")),
    (
        "ensemble",
        include_str!("../../models/presets/ensemble.yaml"),
    ),
    (
        "error_ratio",
        include_str!("../../models/presets/error_ratio.yaml"),
    ),
    ("latency", include_str!("../../models/presets/latency.yaml")),
    ("memory", include_str!("../../models/presets/memory.yaml")),
    (
        "saturation",
        include_str!("../../models/presets/saturation.yaml"),
    ),
    (
        "throughput",
        include_str!("../../models/presets/throughput.yaml"),
    ),
];

/// A preset by name: a built-in one (see [`BUILTIN_PRESETS`]), or else a
/// path to a preset file.
pub fn resolve_preset(name: &str) -> Result<Preset, PresetError> {
    match BUILTIN_PRESETS.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => parse_preset(text, Path::new(&format!("models/presets/{n}.yaml"))),
        None => load_preset(Path::new(name)),
    }
}

/// Loads and validates a preset file.
pub fn load_preset(path: &Path) -> Result<Preset, PresetError> {
    let text = std::fs::read_to_string(path).map_err(|source| PresetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_preset(&text, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_preset_parses_and_a_bad_name_names_the_file() {
        for (name, _) in BUILTIN_PRESETS {
            resolve_preset(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = resolve_preset("no-such-preset").expect_err("unknown");
        assert!(err.to_string().contains("no-such-preset"), "{err}");
    }

    use super::*;

    fn presets_dir() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/presets"))
    }

    #[test]
    fn every_shipped_preset_loads() {
        let mut n = 0;
        for entry in std::fs::read_dir(presets_dir()).expect("models/presets exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                load_preset(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 7, "expected a preset per metric kind, found {n}");
    }

    #[test]
    fn malformed_preset_names_the_field() {
        let p = Path::new("bad.yaml");
        let e = parse_preset(
            "version: 1\ndetector:\n  kind: ensemble\n  suppress: lots\n",
            p,
        )
        .expect_err("bad")
        .to_string();
        // Internally tagged enums hide the inner field from
        // serde_path_to_error; the message still names `detector` and the value.
        assert!(
            e.contains("bad.yaml") && e.contains("detector") && e.contains("lots"),
            "{e}"
        );
        let e = parse_preset("version: 9\ndetector:\n  kind: median_mad\n", p)
            .expect_err("version")
            .to_string();
        assert!(e.contains("version"), "{e}");
        let e = parse_preset(
            "version: 1\ndetector:\n  kind: median_mad\n  window: 2\n",
            p,
        )
        .expect_err("range")
        .to_string();
        assert!(e.contains("detector.window"), "{e}");
    }
}

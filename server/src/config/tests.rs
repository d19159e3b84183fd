//! Layering of defaults, file, environment and flags; the README's table against the defaults.

use clap::Parser;

use super::*;

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ctxd.toml");
    std::fs::write(&file, "data-dir = \"/from/file\"\nmock-delay-ms = 5\nsync-writes = false\n").expect("write");
    let args = Args::parse_from(["ctxd", "--config", file.to_str().expect("utf-8"), "--mock-delay-ms", "7"]);
    let config = Config::load(args).expect("valid config");
    assert_eq!(config.data_dir, PathBuf::from("/from/file"));
    assert_eq!(config.mock_delay_ms, 7);
    assert!(!config.sync_writes);
    assert_eq!(config.listen, Config::default().listen);

    std::fs::write(&file, "no-such-key = 1\n").expect("write");
    let args = Args::parse_from(["ctxd", "--config", file.to_str().expect("utf-8")]);
    assert!(matches!(Config::load(args), Err(Error::Parse { .. })));
}

/// The README's configuration table lists every flag, with its environment variable and,
/// where it shows one in backticks, the default `Config::default()` has.
#[test]
fn the_readme_lists_every_flag_with_its_default() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
    let rows: Vec<Vec<&str>> = readme
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    let defaults = Config::defaults_shown();
    let command = Args::command_with_defaults();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "config" {
            continue;
        }
        let row = rows.iter().find(|row| row[0] == format!("`--{long}`"));
        let row = row.unwrap_or_else(|| panic!("--{long} is missing from the README's configuration table"));
        let env = format!("`CTXD_{}`", long.to_uppercase().replace('-', "_"));
        assert_eq!(row[1], env, "--{long}");
        if let Some(shown) = row[2].strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            assert_eq!(Some(shown), defaults.get(long).map(String::as_str), "--{long}'s default");
        }
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        match defaults.get(long) {
            Some(value) => assert!(help.ends_with(&format!("[default: {value}]")), "--{long}: {help}"),
            None => assert!(!help.contains("[default:"), "--{long}: {help}"),
        }
    }
}

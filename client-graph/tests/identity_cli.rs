//! `wzp-client identity`, `identity backup` and `identity restore`, run as a
//! user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wzp_proto::Seed;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wzp-client"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wzp-idcli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str], id: &Path, stdin: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.args(args)
        .arg("--identity")
        .arg(id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The fingerprint line: `xxxx:xxxx:...` as `Fingerprint` displays it.
fn fingerprint_of(out: &Output) -> String {
    let s = ok(out);
    let line = s.trim_end_matches('\n');
    assert!(!line.contains('\n'), "more than one line: {s:?}");
    let groups: Vec<&str> = line.split(':').collect();
    assert_eq!(groups.len(), 8, "{line:?}");
    assert!(
        groups.iter().all(|g| g.len() == 4
            && g.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())),
        "{line:?}"
    );
    line.to_string()
}

#[test]
fn identity_is_created_once_and_printed_the_same() {
    let dir = tmp("create");
    let id = dir.join("sub").join("identity");
    let first = run(&["identity"], &id, None);
    let fp = fingerprint_of(&first);
    assert!(
        text(&first.stderr).contains("created a new identity"),
        "{}",
        text(&first.stderr)
    );
    // The file is the seed `join` uses: the fingerprint is its identity's.
    let seed = Seed::load(&id).unwrap();
    assert_eq!(fp, seed.identity().fingerprint().to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&id).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let second = run(&["identity"], &id, None);
    assert_eq!(fingerprint_of(&second), fp);
    assert!(
        !text(&second.stderr).contains("created"),
        "{}",
        text(&second.stderr)
    );
}

#[test]
fn the_default_identity_is_the_one_join_uses() {
    let home = tmp("home");
    let out = bin().arg("identity").env("HOME", &home).output().unwrap();
    let fp = fingerprint_of(&out);
    let seed = Seed::load(&home.join(".wzp").join("identity")).unwrap();
    assert_eq!(fp, seed.identity().fingerprint().to_string());
}

#[test]
fn backup_then_restore_gives_the_same_identity() {
    let dir = tmp("roundtrip");
    let id = dir.join("identity");
    let fp = fingerprint_of(&run(&["identity"], &id, None));
    let words = ok(&run(&["identity", "backup"], &id, None));
    let list: Vec<&str> = words.split_whitespace().collect();
    assert_eq!(list.len(), 24, "{words:?}");
    assert_eq!(
        words.trim(),
        Seed::load(&id).unwrap().to_mnemonic().as_str()
    );
    // Into a new file (its directory made), and the order of flags either way.
    let restored = dir.join("new").join("identity");
    let out = run(&["identity", "restore"], &restored, Some(&words));
    assert_eq!(fingerprint_of(&out), fp);
    assert!(
        text(&out.stderr).contains("restored"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fingerprint_of(&run(&["identity"], &restored, None)), fp);
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&id).unwrap()
    );
    // Upper case and words spread over lines are forgiven.
    let shouty = list.join("\n").to_uppercase();
    let again = dir.join("again");
    assert_eq!(
        fingerprint_of(&run(&["identity", "restore"], &again, Some(&shouty))),
        fp
    );
    // Restoring the identity a file already holds is fine and says so.
    let out = run(&["identity", "restore"], &restored, Some(&words));
    assert_eq!(fingerprint_of(&out), fp);
    assert!(
        text(&out.stderr).contains("already holds this identity"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn restore_over_a_different_identity_needs_force() {
    let dir = tmp("force");
    let mine = dir.join("mine");
    let other = dir.join("other");
    let fp = fingerprint_of(&run(&["identity"], &mine, None));
    let other_fp = fingerprint_of(&run(&["identity"], &other, None));
    assert_ne!(fp, other_fp);
    let words = ok(&run(&["identity", "backup"], &mine, None));
    let before = std::fs::read(&other).unwrap();

    let out = run(&["identity", "restore"], &other, Some(&words));
    assert!(!out.status.success(), "replaced without --force");
    let err = text(&out.stderr);
    assert!(err.contains("holds a different identity"), "{err}");
    assert!(err.contains(&other_fp), "names the identity there: {err}");
    assert!(err.contains("--force"), "says what to do: {err}");
    assert_eq!(std::fs::read(&other).unwrap(), before, "file untouched");

    let out = run(&["identity", "restore", "--force"], &other, Some(&words));
    assert_eq!(fingerprint_of(&out), fp);
    assert_eq!(fingerprint_of(&run(&["identity"], &other, None)), fp);
    // No temporary file left beside it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["mine", "other"]);
}

#[test]
fn bad_word_lists_are_refused() {
    let dir = tmp("bad");
    let id = dir.join("identity");
    // A valid 24-word phrase (zero entropy) and its parts.
    let zero24 = format!("{} art", ["abandon"; 23].join(" "));
    let valid = run(&["identity", "restore"], &dir.join("valid"), Some(&zero24));
    fingerprint_of(&valid);
    let zero12 = format!("{} about", ["abandon"; 11].join(" "));
    let with = |i: usize, w: &str| {
        let mut v: Vec<&str> = zero24.split(' ').collect();
        v[i] = w;
        v.join(" ")
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("nothing", String::new(), &["no recovery words"]),
        ("blank lines", "\n \n".into(), &["no recovery words"]),
        (
            "23 words",
            ["abandon"; 23].join(" "),
            &["expected 24 recovery words, got 23"],
        ),
        (
            "25 words",
            format!("{zero24} abandon"),
            &["expected 24 recovery words, got 25"],
        ),
        (
            "a valid 12-word phrase",
            zero12,
            &["expected 24 recovery words, got 12"],
        ),
        (
            "an unknown word",
            with(2, "zzzzqq"),
            &["word 3 `zzzzqq`", "BIP39"],
        ),
        (
            "a typo",
            with(0, "abandn"),
            &["word 1 `abandn`", "did you mean `abandon`?"],
        ),
        (
            "a wrong checksum",
            ["abandon"; 24].join(" "),
            &["checksum", "a word is wrong"],
        ),
        (
            "hex instead of words",
            "00".repeat(32),
            &["word 1", "BIP39"],
        ),
    ];
    for (what, input, wanted) in cases {
        let out = run(&["identity", "restore"], &id, Some(&input));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            out.stdout.is_empty(),
            "{what}: printed {}",
            text(&out.stdout)
        );
        for w in wanted {
            assert!(err.contains(w), "{what}: {err:?} lacks {w:?}");
        }
        assert!(
            err.contains("wzp-client identity backup"),
            "{what}: says what to give: {err}"
        );
        assert!(!id.exists(), "{what}: wrote an identity");
    }
}

#[test]
fn backup_of_a_missing_identity_and_restore_without_a_file_are_errors() {
    let dir = tmp("missing");
    let out = run(&["identity", "backup"], &dir.join("none"), None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no identity in"), "{err}");
    assert!(!dir.join("none").exists(), "backup created an identity");

    let out = bin()
        .args(["identity", "restore"])
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs --identity FILE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_shows_examples() {
    for args in [
        &["identity", "--help"][..],
        &["identity", "restore", "--help"],
    ] {
        let out = bin().args(args).output().unwrap();
        let s = ok(&out);
        assert!(s.contains("Examples:"), "{args:?}: {s}");
        assert!(
            s.contains("wzp-client identity restore --identity"),
            "{args:?}: {s}"
        );
    }
}

/// A backup that cannot be written (a full disk) fails with the reason: it
/// panicked in println!, and a backup must never look written when it is
/// not.
#[test]
fn a_backup_to_a_full_disk_fails_clearly() {
    let dir = tmp("backup-full");
    let id = dir.join("id");
    ok(&run(&["identity"], &id, None));
    let out = bin()
        .args(["identity", "backup", "--identity"])
        .arg(&id)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left") && !err.contains("panicked"),
        "{err}"
    );
}

/// Without HOME there is no ~/.wzp: the client says so instead of making
/// an identity in whatever folder it was started from (a fingerprint that
/// changed with the working directory); --identity still works.
#[test]
fn without_home_the_identity_must_be_named() {
    let dir = tmp("nohome");
    for home in [None, Some("")] {
        let mut cmd = bin();
        cmd.arg("identity").current_dir(&dir);
        match home {
            None => cmd.env_remove("HOME"),
            Some(h) => cmd.env("HOME", h),
        };
        let out = cmd.output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("HOME is not set") && err.contains("--identity"),
            "{err}"
        );
        assert!(
            !dir.join(".wzp").exists(),
            "nothing made in the working folder"
        );
    }
    let out = bin()
        .args(["identity", "--identity"])
        .arg(dir.join("id"))
        .env_remove("HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

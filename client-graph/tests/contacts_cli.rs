//! `wzp-client contacts`: add, list, verify, remove, with clear errors for a
//! name or fingerprint already taken, an unknown name, a bad fingerprint or
//! a broken file, which is left as it was.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const A: &str = "3f2a:9c01:77de:0b4e:5a10:c3d2:e8f7:1a6b";
const B: &str = "0000:1111:2222:3333:4444:5555:6666:7777";

fn contacts(file: &Path, args: &[&str]) -> Output {
    Command::new(common::bin("wzp-client"))
        .arg("contacts")
        .args(args)
        .arg("--contacts")
        .arg(file)
        .output()
        .expect("wzp-client runs")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output, why: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "{err}");
}

#[test]
fn contacts_are_added_listed_verified_and_removed_with_clear_errors() {
    let dir = common::tmp("wzp-contacts-cli", "c");
    let file = dir.join("sub").join("contacts.toml");
    assert!(ok(contacts(&file, &[])).contains("no contacts yet"));
    ok(contacts(&file, &["add", "alice", A]));
    ok(contacts(&file, &["add", "bob", B, "--verified"]));
    let list = ok(contacts(&file, &["list"]));
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [
            format!("alice  {A}  not verified"),
            format!("bob  {B}  verified")
        ]
    );
    fails(contacts(&file, &["add", "Alice", B]), "is taken");
    fails(
        contacts(&file, &["add", "carol", A]),
        "already a contact, as \"alice\"",
    );
    fails(
        contacts(&file, &["add", "carol", "12:34"]),
        "not a fingerprint",
    );
    fails(contacts(&file, &["add", A, B]), "reads as a fingerprint");
    fails(
        contacts(&file, &["remove", "carol"]),
        "no contact named \"carol\"",
    );
    fails(contacts(&file, &["verify", "carol"]), "no contact named");
    assert!(ok(contacts(&file, &["verify", "ALICE"])).contains("alice"));
    assert!(ok(contacts(&file, &["unverify", "bob"])).contains("not verified"));
    assert!(ok(contacts(&file, &["remove", "bob"])).contains(B));
    assert_eq!(
        ok(contacts(&file, &["list"])).trim(),
        format!("alice  {A}  verified")
    );
    // Blocking: a fingerprint or a contact's name; listed; taken back.
    assert!(
        ok(contacts(&file, &["block", B, "--note", "calls at night"]))
            .contains(&format!("blocked {B}"))
    );
    let said = ok(contacts(&file, &["block", "alice"]));
    assert!(said.contains("alice stays a contact"), "{said}");
    assert_eq!(
        ok(contacts(&file, &["list"])).lines().collect::<Vec<_>>(),
        [
            format!("alice  {A}  verified, blocked"),
            format!("blocked  {B}  (calls at night)"),
            format!("blocked  {A}"),
        ]
    );
    assert!(ok(contacts(&file, &["unblock", "alice"])).contains(A));
    fails(contacts(&file, &["unblock", "alice"]), "is not blocked");
    fails(
        contacts(&file, &["block", "carol"]),
        "neither a fingerprint",
    );
    fails(
        contacts(&file, &["block", B, "--note", "a\u{7}"]),
        "printable",
    );
    // A name that only looks like a contact's is refused.
    fails(
        contacts(&file, &["add", "\u{430}lice", B]),
        "looks like your contact alice's",
    );
    // A file broken by hand: every command says where, and it stays as it is.
    std::fs::write(&file, "[[contact]]\nname = \"x\"\n").unwrap();
    fails(contacts(&file, &["list"]), "missing field `fingerprint`");
    fails(contacts(&file, &["add", "bob", B]), "contacts.toml");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[[contact]]\nname = \"x\"\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `history` names contacts, reveals a stranger's claimed alias, filters
/// missed calls, and skips (and says so) lines that are not calls.
#[test]
fn history_lists_calls_with_names_and_skips_broken_lines() {
    let dir = common::tmp("wzp-history-cli", "h");
    let contacts_file = dir.join("contacts.toml");
    ok(contacts(&contacts_file, &["add", "alice", A]));
    let hist = dir.join("history.jsonl");
    std::fs::write(
        &hist,
        format!(
            "{{\"at\":1796615100,\"dir\":\"in\",\"peer\":\"{A}\",\"alias\":\"alice\",\"outcome\":\"answered\",\"secs\":125}}\n\
             {{\"at\":1796615160,\"dir\":\"in\",\"peer\":\"{B}\",\"alias\":\"\u{430}lice\",\"outcome\":\"missed\"}}\n\
             {{\"at\":17966\n\
             {{\"at\":1796615220,\"dir\":\"out\",\"peer\":\"{B}\",\"outcome\":\"busy\"}}\n"
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(common::bin("wzp-client"))
            .arg("history")
            .arg("--history")
            .arg(&hist)
            .arg("--contacts")
            .arg(&contacts_file)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let said = ok(out.clone());
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        [
            format!("2026-12-07 03:45 UTC  in   alice ({A})  answered  2m05s"),
            format!("2026-12-07 03:46 UTC  in   {B} (says \"\\u{{430}}lice\")  MISSED"),
            format!("2026-12-07 03:47 UTC  out  {B}  busy"),
        ]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 line(s)"),
        "{out:?}"
    );
    let said = ok(run(&["--missed"]));
    assert_eq!(said.lines().count(), 1, "{said}");
    let out = run(&["--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = ok(run(&["--limit", "1"]));
    assert!(said.trim().ends_with("busy"), "{said}");
    std::fs::remove_file(&hist).unwrap();
    assert!(ok(run(&[])).starts_with("no calls in "));
    let _ = std::fs::remove_dir_all(dir);
}

//! The `[[peers]]` snippet the relay prints at start holds an address
//! another relay can dial: never the wildcard it may be bound to.

mod common;

use std::net::SocketAddr;

use common::*;

/// The comment line and the address of the printed snippet.
fn snippet(relay: &RelayProc) -> (String, String) {
    let head = &relay.stdout_head;
    let at = head
        .iter()
        .position(|l| l == "[[peers]]")
        .unwrap_or_else(|| panic!("no [[peers]] snippet: {head:?}"));
    let comment = head[at - 1].clone();
    let address = head[at + 1]
        .strip_prefix("address = \"")
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no address line after [[peers]]: {head:?}"))
        .to_string();
    (comment, address)
}

#[test]
fn a_wildcard_bind_prints_a_dialable_address_with_the_bound_port() {
    let dir = tempdir();
    let seed = dir.path().join("relay.seed");
    let relay = RelayProc::start(&["-i", seed.to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert!(relay.quic.ip().is_unspecified(), "bound to {}", relay.quic);
    let (comment, address) = snippet(&relay);
    let addr: SocketAddr = address
        .parse()
        .unwrap_or_else(|e| panic!("{address:?} is not IP:PORT: {e}"));
    assert!(!addr.ip().is_unspecified(), "snippet shows {address}");
    assert_ne!(relay.quic.port(), 0);
    assert_eq!(addr.port(), relay.quic.port(), "snippet shows {address}");
    assert!(comment.starts_with("# address: "), "{comment}");
    assert!(
        comment.contains("outbound interface") || comment.contains("loopback"),
        "{comment}"
    );
    assert!(
        comment.contains("public_addr"),
        "says how to override: {comment}"
    );
}

#[test]
fn public_addr_and_a_specific_bind_are_shown_as_they_are() {
    let dir = tempdir();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        "listen = \"0.0.0.0:0\"\npublic_addr = \"relay.example.org:4433\"\n",
    )
    .unwrap();
    let seed = dir.path().join("relay.seed");
    let relay = RelayProc::start(&["-i", seed.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    let (comment, address) = snippet(&relay);
    assert_eq!(address, "relay.example.org:4433");
    assert!(comment.contains("public_addr"), "{comment}");
    drop(relay);

    let relay = RelayProc::start_in(dir.path(), &[]);
    let (comment, address) = snippet(&relay);
    assert_eq!(address, relay.quic.to_string());
    assert!(comment.contains("bound address"), "{comment}");
}

/// The snippet is TOML another relay's config takes as it is: a label with
/// a quote and a backslash is escaped (it was printed between bare quotes).
#[test]
fn the_snippet_is_valid_toml_whatever_the_label() {
    let dir = tempdir();
    let seed = dir.path().join("relay.seed");
    let label = r#"a"b\c"#;
    let relay = RelayProc::start(&["-i", seed.to_str().unwrap(), "--label", label]);
    let head = &relay.stdout_head;
    let at = head.iter().position(|l| l == "[[peers]]").unwrap();
    let block: String = head[at..]
        .iter()
        .take_while(|l| *l == "[[peers]]" || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let parsed: toml::Table = toml::from_str(&block).unwrap_or_else(|e| panic!("{block}: {e}"));
    let peer = &parsed["peers"].as_array().unwrap()[0];
    assert_eq!(peer["label"].as_str(), Some(label), "{block}");
    assert_eq!(
        peer["fingerprint"].as_str(),
        Some(relay.fingerprint.to_string().as_str())
    );
}

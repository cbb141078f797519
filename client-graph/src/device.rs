//! Which of a person's devices this client is: a random id kept beside the
//! identity (`IDENTITY.device`, e.g. `~/.wzp/identity.device`), sent with
//! each presence registration. A relay that knows devices keeps one
//! registration per device, so a person's phone and laptop both ring; the
//! same device registering again (a restarted `listen`) replaces its own
//! older registration. The id is no secret and proves nothing: the identity
//! key does that. A copy of the whole `~/.wzp` is the same device until its
//! `identity.device` is deleted (the next start makes a new one).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::presence::{DeviceId, DEVICE_ID_LEN};

/// Where the device id of the identity at `identity` is kept.
pub fn device_path(identity: &Path) -> PathBuf {
    let mut name = identity.file_name().unwrap_or_default().to_os_string();
    name.push(".device");
    identity.with_file_name(name)
}

/// A fresh random device id.
pub fn random() -> Result<DeviceId> {
    let mut id = [0u8; DEVICE_ID_LEN];
    getrandom::fill(&mut id).map_err(|e| anyhow!("no randomness for a device id: {e}"))?;
    Ok(id)
}

/// Reads a device id file's text: hex, one line.
pub fn parse(text: &str) -> Result<DeviceId> {
    let t = text.trim();
    let mut id = [0u8; DEVICE_ID_LEN];
    hex::decode_to_slice(t, &mut id).map_err(|_| {
        anyhow!(
            "expected {} hex digits, found {:?}",
            DEVICE_ID_LEN * 2,
            t.chars().take(40).collect::<String>()
        )
    })?;
    Ok(id)
}

/// This device's id for the identity at `identity`: read from its file,
/// or made and written there on first use.
pub fn load_or_create(identity: &Path) -> Result<DeviceId> {
    let path = device_path(identity);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).with_context(|| {
            format!(
                "device id {}: delete the file to make a new one (this device is then \
                 a new one to the relay)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = random()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, format!("{}\n", hex::encode(id)))
                .with_context(|| format!("writing the device id to {}", path.display()))?;
            Ok(id)
        }
        Err(e) => bail!("reading the device id {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_made_once_and_kept_beside_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let identity = dir.path().join("identity");
        assert_eq!(device_path(&identity), dir.path().join("identity.device"));
        let first = load_or_create(&identity).unwrap();
        assert_eq!(load_or_create(&identity).unwrap(), first);
        let text = std::fs::read_to_string(device_path(&identity)).unwrap();
        assert_eq!(text.trim(), hex::encode(first));
        // Another identity file in the same folder is another device.
        let other = load_or_create(&dir.path().join("work-identity")).unwrap();
        assert_ne!(other, first);
    }

    #[test]
    fn a_damaged_id_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let identity = dir.path().join("identity");
        for bad in ["", "xyz", "0123", "0123456789abcdef00", "0123456789abcdeg"] {
            std::fs::write(device_path(&identity), bad).unwrap();
            let e = format!("{:#}", load_or_create(&identity).unwrap_err());
            assert!(e.contains("delete the file"), "{bad:?}: {e}");
            assert!(e.contains("16 hex digits"), "{bad:?}: {e}");
        }
        std::fs::write(device_path(&identity), "0123456789ABCDEF\n").unwrap();
        assert_eq!(
            load_or_create(&identity).unwrap(),
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
        );
    }
}

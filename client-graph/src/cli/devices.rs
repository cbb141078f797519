//! `wzp-client devices`: the audio devices a call can use, by the names
//! `--input mic:NAME` and `--output speaker:NAME` take.

use anyhow::{anyhow, Result};
use wzp_stages::audio::device::{list_devices, DeviceEntry, NULL_DEVICE};

pub const EXAMPLES: &str = "\
Examples:
  wzp-client devices
      The input and output devices, by id and name.
  wzp-client join --relay 203.0.113.7:4433 --room standup --input mic:USB --output speaker:USB
      A call on a USB headset: NAME is a device's id, its name, or a part of
      either (case does not matter); `mic` and `speaker` alone are the
      defaults. `null` (ALSA's silent device) is used only when named.";

/// The listing, one section per direction.
pub fn render(backend: &str, devices: &[DeviceEntry]) -> String {
    let mut out = format!("audio backend: {backend}\n");
    for (title, flag, wants) in [
        ("input devices", "--input mic:NAME", true),
        ("output devices", "--output speaker:NAME", false),
    ] {
        let these: Vec<&DeviceEntry> = devices
            .iter()
            .filter(|d| if wants { d.input } else { d.output })
            .collect();
        out.push_str(&format!("{title} ({flag}):\n"));
        if these.is_empty() {
            out.push_str("  none\n");
        }
        for d in these {
            let mut line = format!("  {}", d.id);
            if !d.name.is_empty() {
                line.push_str(&format!("  ({})", d.name));
            }
            if d.null {
                line.push_str(&format!(
                    "  [silent; used only as {}:{NULL_DEVICE}]",
                    if wants { "mic" } else { "speaker" }
                ));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

pub fn devices_cmd() -> Result<()> {
    let (backend, devices) = list_devices().map_err(|e| anyhow!("{e}"))?;
    print!("{}", render(&backend, &devices));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, name: &str, input: bool, output: bool) -> DeviceEntry {
        DeviceEntry {
            id: id.into(),
            name: name.into(),
            input,
            output,
            null: id == NULL_DEVICE,
        }
    }

    #[test]
    fn each_direction_lists_its_devices_and_says_how_to_name_them() {
        let text = render(
            "ALSA",
            &[
                dev("null", "Discard all samples", true, true),
                dev("hw:CARD=USB,DEV=0", "USB Headset", true, true),
                dev("hw:CARD=HDMI,DEV=3", "", false, true),
            ],
        );
        assert_eq!(
            text,
            "audio backend: ALSA\n\
             input devices (--input mic:NAME):\n  \
             null  (Discard all samples)  [silent; used only as mic:null]\n  \
             hw:CARD=USB,DEV=0  (USB Headset)\n\
             output devices (--output speaker:NAME):\n  \
             null  (Discard all samples)  [silent; used only as speaker:null]\n  \
             hw:CARD=USB,DEV=0  (USB Headset)\n  \
             hw:CARD=HDMI,DEV=3\n"
        );
        assert!(render("ALSA", &[]).contains("input devices (--input mic:NAME):\n  none\n"));
    }
}

//! Reading the text files a user names (graph files, loss traces, configs):
//! bounded, so a path that is not such a file (`/dev/zero`, a disk image)
//! gives an error instead of reading until memory runs out.

use std::io::{self, Read};
use std::path::Path;

/// Most bytes of a graph file, a config or a vars file.
pub const MAX_TEXT: u64 = 16 << 20;

/// Reads the UTF-8 text of `path`, at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB: not a file of this kind", max >> 20),
        ));
    }
    String::from_utf8(buf).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_and_oversized_files_are_refused_and_text_is_read() {
        let e = read_text(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        let dir = std::env::temp_dir().join(format!("wzp-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.txt");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(read_text(&p, 3).unwrap(), "abc");
        assert!(read_text(&p, 2).is_err());
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_text(&p, 10).unwrap_err().to_string().contains("UTF-8"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

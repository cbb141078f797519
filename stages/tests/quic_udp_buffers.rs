//! The QUIC sockets ask the kernel for buffers that hold a burst: a relay's
//! one socket takes every client's datagrams, and what arrives while it is
//! full is dropped (QUIC loss). Sizes are read back from the kernel.

#![cfg(target_os = "linux")]

use wzp_proto::Seed;
use wzp_stages::net::quic::{self, size_udp_buffers, RELAY_UDP_BUFFER_BYTES};

/// `net.core.rmem_max`: what a process without CAP_NET_ADMIN can get.
fn rmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn may_force() -> bool {
    // Root has CAP_NET_ADMIN in the tests' environment (CI runs as root).
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_sized_socket_gets_more_than_the_kernel_default_and_reports_it() {
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let default = size_udp_buffers(&plain, 0).unwrap();
    assert!(default.recv > 0 && default.send > 0, "{default:?}");

    let want = 4 << 20;
    assert!(
        want > default.recv,
        "the test asks for more than the default"
    );
    let sized = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let got = size_udp_buffers(&sized, want).unwrap();
    if may_force() {
        // Linux reports twice what was set.
        assert!(got.recv >= want && got.send >= want, "{got:?}");
    } else {
        // Capped at rmem_max (reported doubled).
        assert!(
            got.recv >= want.min(rmem_max()),
            "{got:?}, rmem_max {}",
            rmem_max()
        );
    }
    assert!(got.recv > default.recv, "{got:?} against {default:?}");
    // The kernel's figure is what the call reports.
    assert_eq!(size_udp_buffers(&sized, 0).unwrap(), got);
}

#[tokio::test]
async fn the_relay_endpoint_asks_for_its_default_and_zero_leaves_the_kernels() {
    let cert = Seed::from_bytes([3; 32]).relay_certificate().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let (_ep, sized) = quic::server_endpoint_sized(any, &cert, RELAY_UDP_BUFFER_BYTES).unwrap();
    let sized = sized.expect("sizes read back");
    let (_ep0, plain) = quic::server_endpoint_sized(any, &cert, 0).unwrap();
    let plain = plain.expect("sizes read back");
    if may_force() {
        assert!(sized.recv >= RELAY_UDP_BUFFER_BYTES, "{sized:?}");
    }
    assert!(sized.recv > plain.recv, "{sized:?} against {plain:?}");
}

//! QUIC congestion control for connections that carry real-time media.
//!
//! Media rides QUIC datagrams, which quinn counts against the congestion
//! window like any other packet. A loss-based controller (Cubic, quinn's
//! default) reads a network outage as congestion: once every packet of an
//! interval longer than three probe timeouts is lost (a 400 ms outage on a
//! 20 ms path is), it declares persistent congestion and drops the window to
//! two full-size packets. Voice traffic is application-limited, so the
//! window then never grows back (a controller only grows it on
//! acknowledgements of a window-limited sender), and quinn checks every
//! packet against the window *as if it were full size* and paces at
//! window / RTT: a sender of 50 small datagrams a second ends up held in
//! the send queue, the datagrams leave late and several to a UDP packet,
//! and the far end's jitter buffer stretches to follow. Measured on the
//! live quality bench (docs/QUALITY.md): after periodic 400 ms outages the
//! talker put fewer UDP datagrams on the path than it was given frames, and
//! the far end's lag grew by 160-240 ms.
//!
//! The rate of media is not QUIC's to decide: the sender's quality
//! controller (`stages/src/quality/controller.rs`) adapts it from its
//! receivers' loss, delay and throughput reports, the way real-time media
//! over UDP is controlled elsewhere. [`MediaWindow`] therefore wraps Cubic
//! with a floor: the window never drops below [`MEDIA_WINDOW_FLOOR`], enough
//! for the media a connection carries in one round trip (a relay sending a
//! room of 20 at 24 kb/s to a client is ~60 KB/s; 64 KiB covers a 1 s RTT
//! of that), and Cubic governs above it (bulk stream data, a federation
//! link carrying many rooms). Stream data below the floor is not pushed
//! harder than the floor either way: signalling is a few messages a call.

use std::any::Any;
use std::sync::Arc;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};

/// The smallest congestion window of a wzp connection, bytes.
pub const MEDIA_WINDOW_FLOOR: u64 = 64 * 1024;

/// Builds [`MediaWindow`] controllers: Cubic with a floor.
#[derive(Debug, Clone)]
pub struct MediaWindowConfig {
    cubic: Arc<CubicConfig>,
    floor: u64,
}

impl Default for MediaWindowConfig {
    fn default() -> Self {
        MediaWindowConfig {
            cubic: Arc::new(CubicConfig::default()),
            floor: MEDIA_WINDOW_FLOOR,
        }
    }
}

impl MediaWindowConfig {
    /// Cubic with a window that never drops below `floor` bytes.
    pub fn with_floor(floor: u64) -> Self {
        MediaWindowConfig {
            floor,
            ..MediaWindowConfig::default()
        }
    }
}

impl ControllerFactory for MediaWindowConfig {
    fn build(self: Arc<Self>, now: std::time::Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(MediaWindow {
            inner: self.cubic.clone().build(now, current_mtu),
            floor: self.floor,
        })
    }
}

/// Cubic whose window never drops below a floor (see the module doc).
pub struct MediaWindow {
    inner: Box<dyn Controller>,
    floor: u64,
}

impl MediaWindow {
    /// The wrapped controller's own window (without the floor).
    pub fn inner_window(&self) -> u64 {
        self.inner.window()
    }
}

impl Controller for MediaWindow {
    fn on_sent(&mut self, now: std::time::Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: std::time::Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = self.inner.metrics();
        m.congestion_window = self.window();
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(MediaWindow {
            inner: self.inner.clone_box(),
            floor: self.floor,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Box<dyn Controller> {
        Arc::new(MediaWindowConfig::default()).build(std::time::Instant::now(), 1200)
    }

    #[test]
    fn persistent_congestion_leaves_the_floor() {
        let mut c = controller();
        let now = std::time::Instant::now();
        assert!(c.window() >= MEDIA_WINDOW_FLOOR);
        c.on_congestion_event(now, now, true, 4000);
        // Cubic alone drops to two packets here.
        assert_eq!(c.window(), MEDIA_WINDOW_FLOOR);
        assert_eq!(c.metrics().congestion_window, MEDIA_WINDOW_FLOOR);
        let inner = c.into_any().downcast::<MediaWindow>().unwrap();
        assert!(
            inner.inner_window() <= 2 * 1200,
            "cubic's own window {} after persistent congestion",
            inner.inner_window()
        );
    }

    #[test]
    fn above_the_floor_cubic_decides() {
        let cfg = Arc::new(MediaWindowConfig::with_floor(1000));
        let now = std::time::Instant::now();
        let mut c = cfg.build(now, 1200);
        let before = c.window();
        assert!(before > 1000, "cubic's initial window {before}");
        c.on_congestion_event(now, now, false, 1200);
        let after = c.window();
        assert!(
            after < before,
            "a loss shrinks the window: {before} -> {after}"
        );
        assert!(after >= 1000);
        let copy = c.clone_box();
        assert_eq!(copy.window(), after);
    }
}

//! Entry points for the cargo-fuzz targets in `tests/fuzz` (`astm_frames`, `astm_records`) and
//! for regression tests. Each runs the public API on arbitrary bytes and asserts properties
//! that must hold for every input. Never called by the daemon.

use super::frame::{self, ACK, ENQ, EOT, Event, Link, NAK};
use super::query;
use super::records::{self, parse};
use super::results::{AstmMapping, content_id, extract};
use std::sync::OnceLock;

/// Feeds `data` to a receiving link in two pieces (split where the first byte says), settling
/// every message alternately stored and not, and checks: every message handed on parses as
/// records ending with CR and ends with an L record; the link's replies are only ACK, NAK
/// and (never while receiving) nothing else; every reply byte is one of ACK/NAK/ENQ/EOT or a
/// frame; a frame the link writes decodes again.
pub fn frames_checked(data: &[u8]) {
    const MAX: usize = 4096;
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut link = Link::new(MAX);
    let mut now = 0u64;
    let mut stored = false;
    let mut total = 0usize;
    for part in [&data[..split], &data[split..]] {
        link.receive(part, now);
        loop {
            let mut settled = false;
            while let Some(ev) = link.next_event() {
                match ev {
                    Event::Messages(ms) => {
                        for m in &ms {
                            assert!(m.ends_with(b"\r"));
                            let last = m[..m.len() - 1]
                                .rsplit(|&b| b == b'\r')
                                .next()
                                .unwrap_or(&[]);
                            assert_eq!(last.first(), Some(&b'L'));
                            assert!(m.len() <= MAX);
                            total += m.len();
                        }
                        assert!(link.is_settling());
                        stored = !stored;
                        link.settle(stored, now);
                        settled = true;
                    }
                    Event::Incomplete { text, .. } => assert!(text.len() <= MAX),
                    _ => {}
                }
            }
            if !settled {
                break;
            }
        }
        for b in link.take_transmit() {
            assert!(matches!(b, ACK | NAK | ENQ | EOT), "{b:#x}");
        }
        now += frame::RECEIVER_TIMEOUT_MS;
        link.on_timeout(now);
    }
    assert!(total <= data.len() * 2);
    // Frames the link writes for any text decode to that text.
    let text: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r')
        .collect();
    let mut body = b"H|\\^&\r".to_vec();
    body.extend_from_slice(&text);
    if !body.ends_with(b"\r") {
        body.push(b'\r');
    }
    body.extend_from_slice(b"L|1|N\r");
    let mut rx = Link::new(usize::MAX);
    rx.receive(&[ENQ], 0);
    let mut got = Vec::new();
    for f in frame::frames_for(&body) {
        rx.receive(&f, 0);
        while let Some(ev) = rx.next_event() {
            if let Event::Messages(ms) = ev {
                got.extend(ms);
                rx.settle(true, 0);
            }
        }
    }
    let joined: Vec<u8> = got.concat();
    assert!(joined.ends_with(b"L|1|N\r"), "the whole body comes back");
}

fn mapping() -> &'static AstmMapping {
    static M: OnceLock<AstmMapping> = OnceLock::new();
    M.get_or_init(|| {
        toml::from_str(
            "[[test]]\ncode = \"THC50\"\nkind = \"initial\"\ntarget = \"marijuana\"\nunit = \"ng/mL\"\n[[test]]\ncode = \"GLUT\"\nkind = \"adulterant\"\ntarget = \"glutaraldehyde\"\n[[test]]\ncode = \"CRVI\"\nkind = \"adulterant\"\ntarget = \"chromium_vi\"\nunit = \"mcg/mL\"\nthreshold = 50\n",
        )
        .expect("fuzz mapping")
    })
}

/// Parses `data` as a message's records; on success reads every field, component and
/// repetition, extracts results and queries with a small mapping, and checks that errors name
/// no content and that an answer message parses back.
pub fn records_checked(data: &[u8]) {
    let Ok(m) = parse(data) else {
        return;
    };
    let d = m.delimiters;
    assert_eq!(m.header().kind, 'H');
    assert_eq!(m.records.last().map(|r| r.kind), Some('L'));
    for r in &m.records {
        for n in 1..=r.len() {
            for (i, _) in r.repetitions(n, &d).enumerate() {
                let _ = r.component(n, i + 1, 1, &d);
                let _ = records::unescape(r.field(n), &d);
            }
        }
    }
    let id = content_id(&m);
    assert_eq!(id.len(), 37);
    match extract(&m, mapping()) {
        Ok(groups) => {
            for g in groups {
                assert!(super::results::valid_specimen_id(&g.specimen_id));
            }
        }
        Err(e) => assert!(!e.to_string().contains("THC50")),
    }
    if let Ok(qs) = query::queries(&m, mapping()) {
        for q in qs.iter().take(4) {
            let a = query::Answer::Orders(vec!["THC50".into()]);
            let bytes = query::answer_message(&q.specimen_id, &a, mapping(), 0);
            let back = parse(&bytes).expect("an answer parses");
            let o = back.of_kind('O').next().expect("an order record");
            assert_eq!(o.component(3, 1, 1, &back.delimiters), q.specimen_id);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_run_on_samples() {
        let msg = b"H|\\^&|||x|||||||P\rO|1|S1\rR|1|^^^THC50|12|ng/mL||||F\rQ|1|^S-2\rL|1|N\r";
        super::records_checked(msg);
        super::records_checked(b"\xff\x00H");
        let mut wire = vec![super::ENQ];
        for f in super::frame::frames_for(msg) {
            wire.extend(f);
        }
        wire.push(super::EOT);
        super::frames_checked(&wire);
        super::frames_checked(&[]);
        super::frames_checked(&[3, super::ENQ, 2, b'1']);
    }
}

//! The low-level protocol of ASTM E1381 / CLSI LIS1-A, as a state machine without I/O.
//!
//! The caller feeds the bytes it read ([`Link::receive`]) and the time (milliseconds from any
//! fixed origin: an injected clock), writes what [`Link::take_transmit`] returns, acts on each
//! [`Event`], and calls [`Link::on_timeout`] when [`Link::next_timeout`] has passed. Nothing
//! here reads a clock, sleeps or touches a socket, so every timer is tested with plain numbers.
//!
//! What the link does, in the standard's phases:
//! - **Establishment.** The analyzer sends ENQ; custodian answers ACK. When custodian has a
//!   message to send (a host query's answer) it sends ENQ itself and waits 15 s for the reply;
//!   NAK means "busy": it waits 10 s and tries again. **Contention** (both sent ENQ): custodian
//!   is the computer system, so it yields: it accepts the analyzer's ENQ, receives, and waits
//!   20 s after that transfer before its next ENQ.
//! - **Transfer.** A frame is `STX FN text ETB|ETX C1 C2 CR LF`: frame numbers run 1..7, 0, 1,
//!   ... from the first frame of a transfer; at most 240 text characters; ETB ends an
//!   intermediate frame (a record continues in the next), ETX the last frame of a record; the
//!   checksum is the sum modulo 256 of the bytes from FN through ETB/ETX, as two upper-case
//!   hexadecimal characters. A defective frame (checksum, frame number, framing, length, a
//!   restricted character in the text) is answered NAK and the sender retransmits it; a frame
//!   that repeats the one just accepted (its ACK was lost) is acknowledged again and not kept
//!   twice. Records are reassembled across frames and a message (H to L) is handed on whole.
//! - **Durability.** The frame that completes a message (its L record) is not acknowledged when
//!   it arrives: the link yields [`Event::Messages`] and waits for [`Link::settle`]. `true`
//!   (stored durably, or kept in quarantine) sends ACK; `false` sends NAK and forgets the frame,
//!   so the sender's retransmission completes the message again. While the link waits nothing
//!   else is read: the sender must not send before its reply.
//! - **Termination.** EOT ends a transfer. A transfer that ends (EOT, the 30 s receiver timer,
//!   a closed connection) inside a message yields [`Event::Incomplete`]: nothing of it was
//!   acknowledged as a message, so nothing is lost; the caller keeps it for investigation.
//! - **Sending.** Custodian's frames are one record each (split at 240 characters with ETB);
//!   each is sent up to 6 times (the first and 5 retransmissions after NAK), then the transfer
//!   is aborted with EOT; no reply within 15 s aborts too. EOT in reply to a frame (the
//!   receiver's interrupt request) is taken as an acknowledgement.

use std::collections::VecDeque;

/// Start of text.
pub const STX: u8 = 0x02;
/// End of text: the last frame of a record.
pub const ETX: u8 = 0x03;
/// End of transmission: the end of a transfer.
pub const EOT: u8 = 0x04;
/// Enquiry: a request to send.
pub const ENQ: u8 = 0x05;
/// Acknowledgement.
pub const ACK: u8 = 0x06;
/// Negative acknowledgement.
pub const NAK: u8 = 0x15;
/// End of transmission block: an intermediate frame.
pub const ETB: u8 = 0x17;
/// Carriage return: ends a record and a frame.
pub const CR: u8 = 0x0D;
/// Line feed: ends a frame.
pub const LF: u8 = 0x0A;

/// Most text characters in one frame.
pub const MAX_TEXT: usize = 240;
/// The sender waits this long for a reply to ENQ or to a frame.
pub const SENDER_TIMEOUT_MS: u64 = 15_000;
/// The receiver waits this long for a frame or EOT.
pub const RECEIVER_TIMEOUT_MS: u64 = 30_000;
/// A frame is sent at most this many times (the first and five retransmissions).
pub const MAX_ATTEMPTS: u32 = 6;
/// After a NAK to its ENQ (the receiver is busy) the sender waits this long.
pub const BUSY_WAIT_MS: u64 = 10_000;
/// After contention the computer system waits this long before its next ENQ.
pub const CONTENTION_WAIT_MS: u64 = 20_000;
/// An ENQ for one outgoing message is tried at most this many times before it is dropped.
pub const MAX_ENQ_ATTEMPTS: u32 = 6;

/// Bytes that must not appear in frame text (the restricted characters other than CR, which
/// ends a record): SOH, STX, ETX, EOT, ENQ, ACK, DLE, NAK, SYN, ETB, LF, DC1-DC4.
fn restricted(b: u8) -> bool {
    matches!(
        b,
        0x01 | STX | ETX | EOT | ENQ | ACK | 0x10 | NAK | 0x16 | ETB | LF | 0x11..=0x14
    )
}

/// The checksum of a frame: the sum modulo 256 of `body`, the bytes from the frame number
/// through ETB or ETX.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn hex(n: u8) -> u8 {
    b"0123456789ABCDEF"[usize::from(n & 0x0F)]
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// One frame on the wire: `STX FN text ETB|ETX C1 C2 CR LF`. `number` is taken modulo 8.
pub fn encode_frame(number: u8, text: &[u8], last: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(text.len() + 7);
    f.push(STX);
    f.push(b'0' + number % 8);
    f.extend_from_slice(text);
    f.push(if last { ETX } else { ETB });
    let sum = checksum(&f[1..]);
    f.push(hex(sum >> 4));
    f.push(hex(sum));
    f.push(CR);
    f.push(LF);
    f
}

/// The frames of a message: each record (ended by CR) in its own frames, split after 240
/// characters with ETB; frame numbers from 1.
pub fn frames_for(message: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut number: u8 = 1;
    for record in message.split_inclusive(|&b| b == CR) {
        let chunks: Vec<&[u8]> = record.chunks(MAX_TEXT).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            frames.push(encode_frame(number, chunk, i + 1 == chunks.len()));
            number = (number + 1) % 8;
        }
    }
    frames
}

/// Why a frame was refused (NAK). Names the defect only, never the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame checksum does not match its text")]
    Checksum,
    #[error("frame number is not the one expected")]
    FrameNumber,
    #[error("frame is not STX FN text ETB|ETX C1 C2 CR LF")]
    Malformed,
    #[error("frame text is longer than 240 characters")]
    TooLong,
    #[error("frame text holds a restricted control character")]
    Restricted,
    #[error("message exceeds the configured maximum size")]
    MessageTooLarge,
}

impl FrameError {
    /// A short key for metric labels.
    pub fn key(self) -> &'static str {
        match self {
            FrameError::Checksum => "checksum",
            FrameError::FrameNumber => "frame_number",
            FrameError::Malformed => "malformed",
            FrameError::TooLong => "too_long",
            FrameError::Restricted => "restricted",
            FrameError::MessageTooLarge => "message_too_large",
        }
    }
}

/// Why a transfer ended inside a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// EOT came before the message's terminator record (L).
    Eot,
    /// No frame or EOT for 30 s.
    Timeout,
    /// A header record (H) began a new message before the terminator of the previous one.
    NewHeader,
    /// The connection closed.
    Closed,
}

impl Incomplete {
    pub fn key(self) -> &'static str {
        match self {
            Incomplete::Eot => "eot",
            Incomplete::Timeout => "timeout",
            Incomplete::NewHeader => "new_header",
            Incomplete::Closed => "closed",
        }
    }

    /// The quarantine reason.
    pub fn reason(self) -> &'static str {
        match self {
            Incomplete::Eot => {
                "ASTM transfer ended (EOT) before the message's terminator record (L); not stored"
            }
            Incomplete::Timeout => {
                "ASTM receiver timer (30 s) expired before the message's terminator record (L); not stored"
            }
            Incomplete::NewHeader => {
                "ASTM header record (H) began a new message before the terminator record (L) of this one; not stored"
            }
            Incomplete::Closed => {
                "connection closed before the ASTM message's terminator record (L); not stored"
            }
        }
    }
}

/// Why an outgoing message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// Six ENQs were refused (NAK) or unanswered.
    NotEstablished,
    /// A frame was refused six times.
    Refused,
    /// No reply to a frame within 15 s.
    Timeout,
}

impl SendFailure {
    pub fn key(self) -> &'static str {
        match self {
            SendFailure::NotEstablished => "not_established",
            SendFailure::Refused => "refused",
            SendFailure::Timeout => "timeout",
        }
    }
}

/// What the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Complete messages (each H to L, records ending with CR). The frame that completed them
    /// is acknowledged only by [`Link::settle`].
    Messages(Vec<Vec<u8>>),
    /// A transfer ended inside a message: its records so far (never acknowledged as a message).
    Incomplete { text: Vec<u8>, why: Incomplete },
    /// A frame was refused with NAK.
    FrameRefused(FrameError),
    /// A frame repeated the one accepted before (its ACK was lost): acknowledged again.
    FrameRepeated,
    /// An outgoing message was delivered (every frame acknowledged, EOT sent).
    Delivered,
    /// An outgoing message was given up.
    SendAborted(SendFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Neutral,
    /// Receiving: the next frame number expected, the receiver's deadline.
    Receiving {
        expect: u8,
        deadline: u64,
    },
    /// A frame (number `number`) completed messages; its reply waits for [`Link::settle`].
    Settling {
        number: u8,
    },
    /// Custodian sent ENQ.
    Enquiring {
        deadline: u64,
    },
    /// Custodian is sending frame `index` of the current message, attempt `attempts`.
    Sending {
        index: usize,
        attempts: u32,
        deadline: u64,
    },
}

enum Scan {
    Incomplete,
    Frame {
        number: u8,
        text: std::ops::Range<usize>,
        consumed: usize,
    },
    Defective {
        error: FrameError,
        consumed: usize,
    },
    /// The frame was cut off by EOT or ENQ at `at`: its bytes are dropped without a reply.
    CutOff {
        at: usize,
    },
}

/// Reads a frame at the start of `buf` (which begins with STX).
fn scan_frame(buf: &[u8]) -> Scan {
    let body = &buf[1..];
    let window = body.len().min(MAX_TEXT + 2);
    let end = body[..window]
        .iter()
        .position(|&b| matches!(b, ETX | ETB | STX | EOT | ENQ));
    let end = match end {
        None if body.len() >= MAX_TEXT + 2 => {
            return Scan::Defective {
                error: FrameError::TooLong,
                consumed: buf.len(),
            };
        }
        None => return Scan::Incomplete,
        Some(i) => i,
    };
    match body[end] {
        STX => {
            return Scan::Defective {
                error: FrameError::Malformed,
                consumed: 1 + end,
            };
        }
        EOT | ENQ => return Scan::CutOff { at: 1 + end },
        _ => {}
    }
    if body.len() < end + 5 {
        return Scan::Incomplete;
    }
    let consumed = 1 + end + 5;
    if end == 0 {
        return Scan::Defective {
            error: FrameError::Malformed,
            consumed,
        };
    }
    let tail = &body[end + 1..end + 5];
    let (Some(hi), Some(lo)) = (unhex(tail[0]), unhex(tail[1])) else {
        return Scan::Defective {
            error: FrameError::Malformed,
            consumed,
        };
    };
    if tail[2] != CR || tail[3] != LF {
        return Scan::Defective {
            error: FrameError::Malformed,
            consumed,
        };
    }
    if !(b'0'..=b'7').contains(&body[0]) {
        return Scan::Defective {
            error: FrameError::FrameNumber,
            consumed,
        };
    }
    if checksum(&body[..=end]) != (hi << 4 | lo) {
        return Scan::Defective {
            error: FrameError::Checksum,
            consumed,
        };
    }
    let text = 2..1 + end;
    if buf[text.clone()].iter().any(|&b| restricted(b)) {
        return Scan::Defective {
            error: FrameError::Restricted,
            consumed,
        };
    }
    Scan::Frame {
        number: body[0] - b'0',
        text,
        consumed,
    }
}

/// One analyzer link (one connection or one serial line), custodian being the computer
/// system.
#[derive(Debug)]
pub struct Link {
    state: State,
    /// Bytes read and not yet processed.
    rx: VecDeque<u8>,
    /// Bytes to write.
    tx: Vec<u8>,
    events: VecDeque<Event>,
    /// Text of the message being received (records ending with CR).
    message: Vec<u8>,
    max_message: usize,
    /// Messages waiting to be sent, as frames; the first is the current one.
    outgoing: VecDeque<Vec<Vec<u8>>>,
    /// ENQs tried for the current outgoing message.
    enq_attempts: u32,
    /// No ENQ before this time.
    not_before: u64,
    /// The analyzer won contention during the current transfer.
    contention: bool,
    /// Bytes dropped outside frames (noise, or the rest of a refused frame).
    discarded: u64,
    /// While settling: how to undo the frame, and what to report once it is acknowledged.
    settling: Option<Pending>,
}

/// The frame that completed messages, until [`Link::settle`].
#[derive(Debug)]
struct Pending {
    /// The message buffer as it was before the frame (restored on NAK).
    rollback: Vec<u8>,
    /// Bytes of the buffer that the completed (and incomplete) messages take.
    upto: usize,
    /// Messages the frame showed to be incomplete: reported only once the frame is
    /// acknowledged, so that a retransmission does not report them twice.
    incomplete: Vec<Vec<u8>>,
}

impl Link {
    /// A link accepting messages of at most `max_message` bytes of record text.
    pub fn new(max_message: usize) -> Link {
        Link {
            state: State::Neutral,
            rx: VecDeque::new(),
            tx: Vec::new(),
            events: VecDeque::new(),
            message: Vec::new(),
            max_message,
            outgoing: VecDeque::new(),
            enq_attempts: 0,
            not_before: 0,
            contention: false,
            discarded: 0,
            settling: None,
        }
    }

    /// The bytes to write now (empty when there are none).
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tx)
    }

    /// Whether events wait to be taken.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event to act on.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes dropped outside frames since the last call (counted, never logged).
    pub fn take_discarded(&mut self) -> u64 {
        std::mem::take(&mut self.discarded)
    }

    /// Whether the link waits for [`Link::settle`].
    pub fn is_settling(&self) -> bool {
        matches!(self.state, State::Settling { .. })
    }

    /// Neutral, nothing buffered, nothing to send: the connection may be closed without
    /// cutting a transfer.
    pub fn is_idle(&self) -> bool {
        self.state == State::Neutral && self.outgoing.is_empty() && self.message.is_empty()
    }

    /// When [`Link::on_timeout`] must be called next, if at all.
    pub fn next_timeout(&self) -> Option<u64> {
        match self.state {
            State::Receiving { deadline, .. }
            | State::Enquiring { deadline }
            | State::Sending { deadline, .. } => Some(deadline),
            State::Settling { .. } => None,
            State::Neutral if !self.outgoing.is_empty() => Some(self.not_before),
            State::Neutral => None,
        }
    }

    /// Queues a message (records ending with CR) to send to the analyzer.
    pub fn send(&mut self, message: &[u8], now: u64) {
        self.outgoing.push_back(frames_for(message));
        self.kick(now);
    }

    /// Bytes read from the analyzer.
    pub fn receive(&mut self, data: &[u8], now: u64) {
        self.rx.extend(data);
        self.process(now);
    }

    /// The connection closed: a message being received is incomplete; what was to be sent is
    /// dropped.
    pub fn close(&mut self) {
        if matches!(self.state, State::Settling { .. }) {
            // The caller settles first; a close while settling leaves the message to settle.
            return;
        }
        self.end_transfer(Incomplete::Closed);
        for _ in self.outgoing.drain(..) {
            self.events
                .push_back(Event::SendAborted(SendFailure::NotEstablished));
        }
        self.state = State::Neutral;
        self.rx.clear();
    }

    /// The answer for the messages of the last [`Event::Messages`]: `true` once every one is
    /// stored durably or kept in quarantine (ACK), `false` when one could not be (NAK: the
    /// sender retransmits the frame).
    pub fn settle(&mut self, stored: bool, now: u64) {
        let State::Settling { number } = self.state else {
            return;
        };
        let Some(p) = self.settling.take() else {
            return;
        };
        if stored {
            self.message.drain(..p.upto);
            self.tx.push(ACK);
            for text in p.incomplete {
                self.events.push_back(Event::Incomplete {
                    text,
                    why: Incomplete::NewHeader,
                });
            }
            self.state = State::Receiving {
                expect: (number + 1) % 8,
                deadline: now + RECEIVER_TIMEOUT_MS,
            };
        } else {
            self.message = p.rollback;
            self.tx.push(NAK);
            self.state = State::Receiving {
                expect: number,
                deadline: now + RECEIVER_TIMEOUT_MS,
            };
        }
        self.process(now);
    }

    /// A timer may have expired.
    pub fn on_timeout(&mut self, now: u64) {
        match self.state {
            State::Receiving { deadline, .. } if now >= deadline => {
                self.end_transfer(Incomplete::Timeout);
                self.state = State::Neutral;
                self.after_transfer(now);
            }
            State::Enquiring { deadline } if now >= deadline => {
                // No reply to ENQ: end the attempt and try again later.
                self.tx.push(EOT);
                self.state = State::Neutral;
                self.enq_refused(now);
            }
            State::Sending { deadline, .. } if now >= deadline => {
                self.tx.push(EOT);
                self.state = State::Neutral;
                self.abort_current(SendFailure::Timeout, now);
            }
            _ => {}
        }
        self.kick(now);
    }

    fn end_transfer(&mut self, why: Incomplete) {
        if !self.message.is_empty() {
            let text = std::mem::take(&mut self.message);
            self.events.push_back(Event::Incomplete { text, why });
        }
    }

    fn after_transfer(&mut self, now: u64) {
        if self.contention {
            self.contention = false;
            self.not_before = self.not_before.max(now + CONTENTION_WAIT_MS);
        }
        self.kick(now);
    }

    fn enq_refused(&mut self, now: u64) {
        self.enq_attempts += 1;
        if self.enq_attempts >= MAX_ENQ_ATTEMPTS {
            self.abort_current(SendFailure::NotEstablished, now);
        } else {
            self.not_before = now + BUSY_WAIT_MS;
        }
    }

    fn abort_current(&mut self, why: SendFailure, now: u64) {
        self.outgoing.pop_front();
        self.enq_attempts = 0;
        self.events.push_back(Event::SendAborted(why));
        self.not_before = self.not_before.max(now);
    }

    /// Starts sending when neutral and allowed.
    fn kick(&mut self, now: u64) {
        if self.state == State::Neutral && !self.outgoing.is_empty() && now >= self.not_before {
            self.tx.push(ENQ);
            self.state = State::Enquiring {
                deadline: now + SENDER_TIMEOUT_MS,
            };
        }
    }

    fn send_frame(&mut self, index: usize, attempts: u32, now: u64) {
        if let Some(frame) = self.outgoing.front().and_then(|m| m.get(index)) {
            self.tx.extend_from_slice(frame);
        }
        self.state = State::Sending {
            index,
            attempts,
            deadline: now + SENDER_TIMEOUT_MS,
        };
    }

    fn process(&mut self, now: u64) {
        loop {
            if self.rx.is_empty() {
                break;
            }
            match self.state {
                State::Settling { .. } => break,
                State::Neutral => {
                    let Some(b) = self.rx.pop_front() else { break };
                    if b == ENQ {
                        self.tx.push(ACK);
                        self.message.clear();
                        self.state = State::Receiving {
                            expect: 1,
                            deadline: now + RECEIVER_TIMEOUT_MS,
                        };
                    } else {
                        self.discarded += 1;
                    }
                }
                State::Enquiring { .. } => {
                    let Some(b) = self.rx.pop_front() else { break };
                    match b {
                        ACK => {
                            self.enq_attempts = 0;
                            self.send_frame(0, 1, now);
                        }
                        NAK => {
                            self.state = State::Neutral;
                            self.enq_refused(now);
                        }
                        ENQ => {
                            // Contention: the computer system yields to the instrument.
                            self.contention = true;
                            self.tx.push(ACK);
                            self.message.clear();
                            self.state = State::Receiving {
                                expect: 1,
                                deadline: now + RECEIVER_TIMEOUT_MS,
                            };
                        }
                        _ => self.discarded += 1,
                    }
                }
                State::Sending {
                    index, attempts, ..
                } => {
                    let Some(b) = self.rx.pop_front() else { break };
                    match b {
                        ACK | EOT => {
                            let frames = self.outgoing.front().map_or(0, |m| m.len());
                            if index + 1 < frames {
                                self.send_frame(index + 1, 1, now);
                            } else {
                                self.tx.push(EOT);
                                self.outgoing.pop_front();
                                self.events.push_back(Event::Delivered);
                                self.state = State::Neutral;
                                self.kick(now);
                            }
                        }
                        NAK if attempts >= MAX_ATTEMPTS => {
                            self.tx.push(EOT);
                            self.state = State::Neutral;
                            self.abort_current(SendFailure::Refused, now);
                            self.kick(now);
                        }
                        NAK => self.send_frame(index, attempts + 1, now),
                        _ => self.discarded += 1,
                    }
                }
                State::Receiving { expect, .. } => {
                    if !self.receive_one(expect, now) {
                        break;
                    }
                }
            }
        }
    }

    /// Handles the next thing in `rx` while receiving; false when more bytes are needed.
    fn receive_one(&mut self, expect: u8, now: u64) -> bool {
        match self.rx.front().copied() {
            None => false,
            Some(EOT) => {
                self.rx.pop_front();
                self.end_transfer(Incomplete::Eot);
                self.state = State::Neutral;
                self.after_transfer(now);
                true
            }
            Some(STX) => match scan_frame(self.rx.make_contiguous()) {
                Scan::Incomplete => false,
                Scan::CutOff { at } => {
                    self.discarded += at as u64;
                    self.rx.drain(..at);
                    true
                }
                Scan::Defective { error, consumed } => {
                    self.rx.drain(..consumed);
                    self.refuse(error, expect, now);
                    true
                }
                Scan::Frame {
                    number,
                    text,
                    consumed,
                } => {
                    let text: Vec<u8> = self.rx.make_contiguous()[text].to_vec();
                    self.rx.drain(..consumed);
                    self.frame(number, &text, expect, now);
                    true
                }
            },
            Some(_) => {
                // Outside a frame (noise, an ENQ during a transfer, the rest of a refused
                // frame): dropped and counted.
                self.rx.pop_front();
                self.discarded += 1;
                true
            }
        }
    }

    fn refuse(&mut self, error: FrameError, expect: u8, now: u64) {
        self.tx.push(NAK);
        self.events.push_back(Event::FrameRefused(error));
        self.state = State::Receiving {
            expect,
            deadline: now + RECEIVER_TIMEOUT_MS,
        };
    }

    fn frame(&mut self, number: u8, text: &[u8], expect: u8, now: u64) {
        if number != expect {
            if number == (expect + 7) % 8 {
                // The frame accepted last, again: its ACK was lost.
                self.tx.push(ACK);
                self.events.push_back(Event::FrameRepeated);
                self.state = State::Receiving {
                    expect,
                    deadline: now + RECEIVER_TIMEOUT_MS,
                };
            } else {
                self.refuse(FrameError::FrameNumber, expect, now);
            }
            return;
        }
        if self.message.len() + text.len() > self.max_message {
            self.refuse(FrameError::MessageTooLarge, expect, now);
            return;
        }
        let before = self.message.len();
        self.message.extend_from_slice(text);
        let (messages, incomplete, upto) = self.scan_messages(before);
        if messages.is_empty() {
            self.message.drain(..upto);
            for text in incomplete {
                self.events.push_back(Event::Incomplete {
                    text,
                    why: Incomplete::NewHeader,
                });
            }
            self.tx.push(ACK);
            self.state = State::Receiving {
                expect: (expect + 1) % 8,
                deadline: now + RECEIVER_TIMEOUT_MS,
            };
        } else {
            self.settling = Some(Pending {
                rollback: self.message[..before].to_vec(),
                upto,
                incomplete,
            });
            self.events.push_back(Event::Messages(messages));
            self.state = State::Settling { number };
        }
    }

    /// Reads the buffer's records from the one the new text (at `before`) continues: the
    /// messages completed (each ending with an L record), those cut short by a header record
    /// that began before their terminator, and the bytes both take from the buffer's start.
    fn scan_messages(&self, before: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, usize) {
        let mut messages = Vec::new();
        let mut incomplete = Vec::new();
        let mut start = 0;
        let mut scan = self.message[..before]
            .iter()
            .rposition(|&b| b == CR)
            .map_or(0, |i| i + 1);
        while let Some(off) = self.message[scan..].iter().position(|&b| b == CR) {
            let end = scan + off + 1;
            match self.message[scan] {
                b'H' if scan > start => {
                    incomplete.push(self.message[start..scan].to_vec());
                    start = scan;
                }
                b'L' => {
                    messages.push(self.message[start..end].to_vec());
                    start = end;
                }
                _ => {}
            }
            scan = end;
        }
        (messages, incomplete, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's bytes from a readable text (`<STX>`, `<CR>`, ... as control characters).
    fn wire(s: &str) -> Vec<u8> {
        s.replace("<STX>", "\x02")
            .replace("<ETX>", "\x03")
            .replace("<ETB>", "\x17")
            .replace("<CR>", "\r")
            .replace("<LF>", "\n")
            .into_bytes()
    }

    /// Worked examples: frames as published from instruments, with the checksum they carry.
    /// A result frame from an instrument (checksum 3D), and the header and order frames of a
    /// CT-90 analyzer transcript (58, A4).
    const WORKED: [(&str, &str); 3] = [
        (
            "<STX>5R|2|^^^1.0000+950+1.0|15|||^5^||V||34001637|20080516153540|20080516153602|34001637<CR><ETX>3D<CR><LF>",
            "3D",
        ),
        (
            "<STX>1H|\\^&|||CT-90^00-15 ^00001^^^^BD934079||||||||E1394-97|20171104070923<CR><ETX>58<CR><LF>",
            "58",
        ),
        (
            "<STX>3O|1|||||20171104070923|||||N||||||||||||||F|||||<CR><ETX>A4<CR><LF>",
            "A4",
        ),
    ];

    #[test]
    fn checksums_of_worked_examples() {
        for (frame, sum) in WORKED {
            let bytes = wire(frame);
            let etx = bytes.iter().position(|&b| b == ETX).unwrap();
            let got = checksum(&bytes[1..=etx]);
            assert_eq!(format!("{got:02X}"), sum, "{frame}");
            // Our encoder writes the same bytes.
            let number = bytes[1] - b'0';
            assert_eq!(encode_frame(number, &bytes[2..etx], true), bytes, "{frame}");
        }
    }

    #[test]
    fn checksum_wraps_modulo_256_and_is_upper_case_hex() {
        assert_eq!(checksum(&[0xFF, 0x02]), 0x01);
        let f = encode_frame(7, b"L|1|N\r", true);
        let sum = checksum(b"7L|1|N\r\x03");
        assert_eq!(
            &f[f.len() - 4..f.len() - 2],
            format!("{sum:02X}").as_bytes()
        );
        assert_eq!(f[1], b'7');
        assert_eq!(
            encode_frame(8, b"x", false)[1],
            b'0',
            "numbers are modulo 8"
        );
    }

    fn link() -> Link {
        Link::new(64 * 1024)
    }

    fn events(l: &mut Link) -> Vec<Event> {
        std::iter::from_fn(|| l.next_event()).collect()
    }

    /// Receives the worked frames as one message with an L record, through the ACKs.
    #[test]
    fn receives_a_message_and_waits_for_settle_before_the_last_ack() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        assert_eq!(l.take_transmit(), [ACK]);
        l.receive(&encode_frame(1, b"H|\\^&|||A\r", true), 10);
        assert_eq!(l.take_transmit(), [ACK]);
        l.receive(&encode_frame(2, b"P|1\r", true), 20);
        l.receive(&encode_frame(3, b"O|1|S1||^^^THC\r", true), 30);
        l.receive(&encode_frame(4, b"R|1|^^^THC|12|ng/mL||||F\r", true), 40);
        assert_eq!(l.take_transmit(), [ACK, ACK, ACK]);
        assert!(events(&mut l).is_empty());
        l.receive(&encode_frame(5, b"L|1|N\r", true), 50);
        assert!(
            l.take_transmit().is_empty(),
            "no ACK before the message is settled"
        );
        let ev = events(&mut l);
        assert_eq!(
            ev,
            [Event::Messages(vec![
                b"H|\\^&|||A\rP|1\rO|1|S1||^^^THC\rR|1|^^^THC|12|ng/mL||||F\rL|1|N\r".to_vec()
            ])]
        );
        assert!(l.is_settling());
        assert_eq!(l.next_timeout(), None, "no receiver timer while settling");
        // Bytes that arrive meanwhile wait.
        l.receive(&[EOT], 60);
        assert!(l.take_transmit().is_empty());
        l.settle(true, 70);
        assert_eq!(l.take_transmit(), [ACK]);
        assert!(
            events(&mut l).is_empty(),
            "the EOT after it ends the transfer cleanly"
        );
        assert!(l.is_idle());
    }

    #[test]
    fn a_message_that_could_not_be_stored_gets_nak_and_completes_again_on_retransmission() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 0);
        l.receive(&encode_frame(2, b"R|1|^^^X|1\r", true), 0);
        l.receive(&encode_frame(3, b"L|1|N\r", true), 0);
        l.take_transmit();
        let first = events(&mut l);
        l.settle(false, 5);
        assert_eq!(l.take_transmit(), [NAK]);
        // The sender retransmits the same frame (same number).
        l.receive(&encode_frame(3, b"L|1|N\r", true), 6);
        assert_eq!(events(&mut l), first, "the same message again, once");
        l.settle(true, 7);
        assert_eq!(l.take_transmit(), [ACK]);
    }

    #[test]
    fn wrong_checksum_gets_nak_and_the_retransmission_is_kept_once() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.take_transmit();
        let good = encode_frame(1, b"H|\\^&\r", true);
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
        l.receive(&bad, 1);
        assert_eq!(l.take_transmit(), [NAK]);
        assert_eq!(events(&mut l), [Event::FrameRefused(FrameError::Checksum)]);
        l.receive(&good, 2);
        assert_eq!(l.take_transmit(), [ACK]);
        l.receive(&encode_frame(2, b"L|1\r", true), 3);
        assert_eq!(
            events(&mut l),
            [Event::Messages(vec![b"H|\\^&\rL|1\r".to_vec()])]
        );
    }

    #[test]
    fn frame_numbers_run_one_to_seven_then_zero_and_a_repeat_is_acknowledged_not_kept() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 0);
        for n in 2..=9u8 {
            l.receive(&encode_frame(n % 8, b"C|1\r", true), 0);
        }
        // Frame 1 again (the ACK of the frame numbered 1 after 0 was lost).
        l.receive(&encode_frame(1, b"C|1\r", true), 0);
        assert_eq!(events(&mut l), [Event::FrameRepeated]);
        // A frame number out of sequence is refused.
        l.receive(&encode_frame(5, b"C|1\r", true), 0);
        assert_eq!(
            events(&mut l),
            [Event::FrameRefused(FrameError::FrameNumber)]
        );
        l.receive(&encode_frame(2, b"L|1\r", true), 0);
        let ev = events(&mut l);
        let Event::Messages(m) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            m[0],
            [&b"H|\\^&\r"[..], &b"C|1\r".repeat(8), b"L|1\r"].concat()
        );
    }

    #[test]
    fn intermediate_frames_are_reassembled() {
        let record = format!("R|1|^^^CREA|{}|mg/dL||||F\r", "9".repeat(300));
        let message = format!("H|\\^&\r{record}L|1|N\r");
        let frames = frames_for(message.as_bytes());
        assert_eq!(frames.len(), 4, "H, R in two frames, L");
        assert_eq!(frames[1][2 + MAX_TEXT], ETB);
        assert_eq!(
            frames[1].len(),
            MAX_TEXT + 7,
            "a full frame is 247 characters"
        );
        assert_eq!(*frames[2].iter().rev().nth(4).unwrap(), ETX);
        let mut l = link();
        l.receive(&[ENQ], 0);
        for f in &frames {
            l.receive(f, 0);
        }
        assert_eq!(
            events(&mut l),
            [Event::Messages(vec![message.into_bytes()])]
        );
    }

    #[test]
    fn defective_frames_are_refused() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (wire("<STX>1H|x<ETX>00<CR>X"), FrameError::Malformed),
            (wire("<STX>1H|x<ETX>ZZ<CR><LF>"), FrameError::Malformed),
            (wire("<STX><ETX>03<CR><LF>"), FrameError::Malformed),
            (
                {
                    let mut f = encode_frame(1, b"H|\x01x\r", true);
                    f.truncate(f.len());
                    f
                },
                FrameError::Restricted,
            ),
            (
                {
                    let mut f = encode_frame(1, b"H|x\r", true);
                    f[1] = b'9';
                    let n = f.len();
                    let sum = checksum(&f[1..n - 4]);
                    f[n - 4] = hex(sum >> 4);
                    f[n - 3] = hex(sum);
                    f
                },
                FrameError::FrameNumber,
            ),
            (
                [&[STX, b'1'][..], &[b'x'; MAX_TEXT + 1]].concat(),
                FrameError::TooLong,
            ),
        ];
        for (bytes, want) in cases {
            let mut l = link();
            l.receive(&[ENQ], 0);
            l.take_transmit();
            l.receive(&bytes, 1);
            assert_eq!(l.take_transmit(), [NAK], "{want:?}");
            assert_eq!(events(&mut l), [Event::FrameRefused(want)]);
        }
        // Exactly 240 characters is accepted.
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.take_transmit();
        l.receive(&encode_frame(1, &[b'x'; MAX_TEXT], false), 1);
        assert_eq!(l.take_transmit(), [ACK]);
    }

    #[test]
    fn errors_never_echo_content() {
        for e in [
            FrameError::Checksum,
            FrameError::FrameNumber,
            FrameError::Malformed,
            FrameError::TooLong,
            FrameError::Restricted,
            FrameError::MessageTooLarge,
        ] {
            assert!(!e.to_string().contains("999"));
            assert!(!e.key().is_empty());
        }
    }

    #[test]
    fn eot_or_the_receiver_timer_inside_a_message_yields_it_incomplete() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 100);
        assert_eq!(l.next_timeout(), Some(100 + RECEIVER_TIMEOUT_MS));
        l.receive(&[EOT], 200);
        assert_eq!(
            events(&mut l),
            [Event::Incomplete {
                text: b"H|\\^&\r".to_vec(),
                why: Incomplete::Eot
            }]
        );
        l.receive(&[ENQ], 300);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 400);
        l.on_timeout(400 + RECEIVER_TIMEOUT_MS - 1);
        assert!(events(&mut l).is_empty(), "not before 30 s");
        l.on_timeout(400 + RECEIVER_TIMEOUT_MS);
        assert_eq!(
            events(&mut l),
            [Event::Incomplete {
                text: b"H|\\^&\r".to_vec(),
                why: Incomplete::Timeout
            }]
        );
        // Back to neutral: a new ENQ starts again at frame 1.
        l.take_transmit();
        l.receive(&[ENQ], 0);
        assert_eq!(l.take_transmit(), [ACK]);
    }

    #[test]
    fn a_new_header_before_the_terminator_ends_the_open_message() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.receive(&encode_frame(1, b"H|\\^&\rR|1\r", true), 0);
        l.receive(&encode_frame(2, b"H|\\^&\r", true), 0);
        l.receive(&encode_frame(3, b"L|1\r", true), 0);
        assert_eq!(
            events(&mut l),
            [
                Event::Incomplete {
                    text: b"H|\\^&\rR|1\r".to_vec(),
                    why: Incomplete::NewHeader
                },
                Event::Messages(vec![b"H|\\^&\rL|1\r".to_vec()])
            ]
        );
        l.settle(true, 0);
        l.receive(&[EOT], 0);
        assert!(l.is_idle());
    }

    #[test]
    fn two_messages_in_one_transfer() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.receive(&encode_frame(1, b"H|\\^&\rL|1\r", true), 0);
        assert_eq!(
            events(&mut l),
            [Event::Messages(vec![b"H|\\^&\rL|1\r".to_vec()])]
        );
        l.settle(true, 0);
        l.receive(&encode_frame(2, b"H|\\^&\r", true), 0);
        l.receive(&encode_frame(3, b"L|1\r", true), 0);
        assert_eq!(
            events(&mut l),
            [Event::Messages(vec![b"H|\\^&\rL|1\r".to_vec()])]
        );
    }

    #[test]
    fn a_message_over_the_maximum_is_refused() {
        let mut l = Link::new(10);
        l.receive(&[ENQ], 0);
        l.take_transmit();
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 0);
        l.receive(&encode_frame(2, b"R|1|123456\r", true), 0);
        assert_eq!(l.take_transmit(), [ACK, NAK]);
        assert_eq!(
            events(&mut l),
            [Event::FrameRefused(FrameError::MessageTooLarge)]
        );
    }

    #[test]
    fn noise_outside_frames_is_discarded_and_counted() {
        let mut l = link();
        l.receive(b"xyz", 0);
        assert_eq!(l.take_discarded(), 3);
        l.receive(&[ENQ, b'q'], 0);
        assert_eq!(l.take_discarded(), 1);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 0);
        assert_eq!(l.take_transmit(), [ACK, ACK]);
        // A frame cut off by EOT: dropped without a reply, the transfer ends.
        l.receive(&wire("<STX>2R|1|"), 0);
        l.receive(&[EOT], 0);
        assert!(l.take_transmit().is_empty());
        assert_eq!(l.take_discarded(), 6);
        assert!(matches!(
            events(&mut l)[..],
            [Event::Incomplete {
                why: Incomplete::Eot,
                ..
            }]
        ));
    }

    #[test]
    fn bytes_split_anywhere_give_the_same_result() {
        let message = b"H|\\^&\rO|1|S\rR|1|^^^A|1\rL|1|N\r";
        let mut wire_bytes = vec![ENQ];
        for f in frames_for(message) {
            wire_bytes.extend(f);
        }
        for cut in 1..wire_bytes.len() {
            let mut l = link();
            l.receive(&wire_bytes[..cut], 0);
            l.receive(&wire_bytes[cut..], 0);
            assert_eq!(
                events(&mut l),
                [Event::Messages(vec![message.to_vec()])],
                "cut {cut}"
            );
        }
    }

    /// Sends `message` to a peer that answers every ENQ and frame with `reply`.
    #[test]
    fn sends_a_message_frame_by_frame() {
        let message = b"H|\\^&\rO|1|S1||^^^THC\rL|1|N\r";
        let frames = frames_for(message);
        let mut l = link();
        l.send(message, 1000);
        assert_eq!(l.take_transmit(), [ENQ]);
        assert_eq!(l.next_timeout(), Some(1000 + SENDER_TIMEOUT_MS));
        l.receive(&[ACK], 1001);
        assert_eq!(l.take_transmit(), frames[0]);
        l.receive(&[ACK], 1002);
        assert_eq!(l.take_transmit(), frames[1]);
        // NAK: the same frame again, up to six times in all.
        for _ in 0..5 {
            l.receive(&[NAK], 1003);
            assert_eq!(l.take_transmit(), frames[1]);
        }
        l.receive(&[ACK], 1004);
        assert_eq!(l.take_transmit(), frames[2]);
        l.receive(&[ACK], 1005);
        assert_eq!(l.take_transmit(), [EOT]);
        assert_eq!(events(&mut l), [Event::Delivered]);
        assert!(l.is_idle());
    }

    #[test]
    fn a_frame_refused_six_times_aborts_with_eot() {
        let mut l = link();
        l.send(b"H|\\^&\rL|1|N\r", 0);
        l.receive(&[ACK], 0);
        l.take_transmit();
        for _ in 0..5 {
            l.receive(&[NAK], 0);
            assert!(!l.take_transmit().is_empty());
        }
        l.receive(&[NAK], 0);
        assert_eq!(l.take_transmit(), [EOT]);
        assert_eq!(events(&mut l), [Event::SendAborted(SendFailure::Refused)]);
        assert!(l.is_idle());
    }

    #[test]
    fn no_reply_within_15_s_aborts_the_transfer() {
        let mut l = link();
        l.send(b"H|\\^&\rL|1|N\r", 0);
        l.receive(&[ACK], 0);
        l.take_transmit();
        l.on_timeout(SENDER_TIMEOUT_MS - 1);
        assert!(l.take_transmit().is_empty());
        l.on_timeout(SENDER_TIMEOUT_MS);
        assert_eq!(l.take_transmit(), [EOT]);
        assert_eq!(events(&mut l), [Event::SendAborted(SendFailure::Timeout)]);
    }

    #[test]
    fn busy_receiver_and_unanswered_enq_are_retried_after_10_s_then_dropped() {
        let mut l = link();
        l.send(b"H|\\^&\rL|1|N\r", 0);
        assert_eq!(l.take_transmit(), [ENQ]);
        l.receive(&[NAK], 5);
        assert!(l.take_transmit().is_empty());
        assert_eq!(l.next_timeout(), Some(5 + BUSY_WAIT_MS));
        l.on_timeout(5 + BUSY_WAIT_MS - 1);
        assert!(l.take_transmit().is_empty());
        let mut t = 5 + BUSY_WAIT_MS;
        l.on_timeout(t);
        assert_eq!(l.take_transmit(), [ENQ]);
        // No answer at all: EOT, wait, ENQ again; the sixth attempt gives up.
        for attempt in 2..=MAX_ENQ_ATTEMPTS {
            t += SENDER_TIMEOUT_MS;
            l.on_timeout(t);
            assert_eq!(l.take_transmit()[0], EOT, "attempt {attempt}");
            if attempt < MAX_ENQ_ATTEMPTS {
                t += BUSY_WAIT_MS;
                l.on_timeout(t);
                assert_eq!(l.take_transmit(), [ENQ]);
            }
        }
        assert_eq!(
            events(&mut l),
            [Event::SendAborted(SendFailure::NotEstablished)]
        );
        assert!(l.is_idle());
    }

    #[test]
    fn contention_the_host_yields_and_waits_20_s() {
        let mut l = link();
        l.send(b"H|\\^&\rL|1|N\r", 0);
        assert_eq!(l.take_transmit(), [ENQ]);
        // The analyzer's ENQ crosses ours: we accept its transfer.
        l.receive(&[ENQ], 10);
        assert_eq!(l.take_transmit(), [ACK]);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 20);
        l.receive(&encode_frame(2, b"L|1\r", true), 30);
        assert!(matches!(events(&mut l)[..], [Event::Messages(_)]));
        l.settle(true, 40);
        assert_eq!(l.take_transmit(), [ACK, ACK]);
        l.receive(&[EOT], 50);
        assert!(l.take_transmit().is_empty(), "no ENQ before 20 s");
        assert_eq!(l.next_timeout(), Some(50 + CONTENTION_WAIT_MS));
        l.on_timeout(50 + CONTENTION_WAIT_MS);
        assert_eq!(l.take_transmit(), [ENQ]);
    }

    #[test]
    fn closing_mid_message_yields_it_incomplete_and_drops_what_was_to_be_sent() {
        let mut l = link();
        l.receive(&[ENQ], 0);
        l.receive(&encode_frame(1, b"H|\\^&\r", true), 0);
        l.close();
        assert_eq!(
            events(&mut l),
            [Event::Incomplete {
                text: b"H|\\^&\r".to_vec(),
                why: Incomplete::Closed
            }]
        );
        let mut l = link();
        l.send(b"H|\\^&\rL|1|N\r", 0);
        l.close();
        assert_eq!(
            events(&mut l),
            [Event::SendAborted(SendFailure::NotEstablished)]
        );
    }
}

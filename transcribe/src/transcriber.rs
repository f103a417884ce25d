//! The transcription stage's scheduler: calls in, transcripts out, with every engine replica
//! kept busy on full batches.
//!
//! Each call's channels are packed into windows ([`crate::pack`]), and the windows go into one
//! queue shared by all calls, ordered by [`Lane`]. One worker thread per replica takes up to
//! `batch_size` windows at a time, from any channel of any call in flight, live calls first,
//! and decodes each once ([`Engine::decode_pass`]). Where a decode stops before the end of its
//! window, the rest goes back to its call; once all of a call's windows are back, its rests
//! are packed together into new windows, so no audio is encoded twice on its own. A call's
//! transcript is assembled once nothing of it is left.
//!
//! A window never mixes calls: the decoder sees a window as one stretch of speech, and a word
//! of one customer's call must never be attributed to another's.
//!
//! Workers are plain threads: engine calls block for hundreds of milliseconds and must never
//! run on the async runtime.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use callpipe_common::transcript::{ChannelTranscript, Segment, Transcript, Word};
use callpipe_common::{Lane, Role, SpeechSegment};

use crate::engine::{BatchItem, Engine, EngineError, FallbackBudget, Pass, RawSegment};
use crate::pack::{
    merge_partial, pack, pack_fragments, AudioSpan, Fragment, Window, MAX_WINDOW_SAMPLES,
};

/// Windows sampled across a call to detect its language (multilingual models only).
const LANGUAGE_SAMPLE_WINDOWS: usize = 6;
/// Passes any stretch of audio may have. One is the rule; a decode that stops early hands its
/// rest to a second. Beyond this the model keeps stopping on the same audio, and what is left
/// is dropped with a warning, so the work on a call stays bounded.
pub const MAX_PASSES: usize = 4;

/// One channel of a call, as the front end hands it over.
#[derive(Debug, Clone)]
pub struct ChannelSpeech {
    pub channel: usize,
    pub role: Role,
    /// The channel's 16 kHz mono audio that the segments need, as ordered, disjoint spans
    /// placed on the call's timeline; the silence between them is not held. With VAD off, one
    /// span with the whole channel.
    pub spans: Vec<AudioSpan>,
    /// Where the speech is; only these stretches are transcribed.
    pub segments: Vec<SpeechSegment>,
}

/// Counters of what the transcriber has done, summed over calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscriberStats {
    /// Samples of speech packed for a first pass (16 kHz, all channels).
    pub speech_samples: u64,
    /// Windows decoded: first passes and windows of leftovers.
    pub windows: u64,
    /// Windows made of leftovers.
    pub leftover_windows: u64,
    /// Engine calls, and the windows they held (their ratio is the mean batch).
    pub batches: u64,
    /// Samples of leftovers dropped after [`MAX_PASSES`].
    pub dropped_samples: u64,
}

#[derive(Debug, Default)]
struct Counters {
    speech_samples: AtomicU64,
    windows: AtomicU64,
    leftover_windows: AtomicU64,
    batches: AtomicU64,
    dropped_samples: AtomicU64,
    /// Nanoseconds the workers have spent inside the engine, summed over workers.
    busy_ns: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A call being transcribed, shared by its windows.
struct CallWork {
    /// The call's file or id, for log lines.
    label: String,
    language: String,
    lane: Lane,
    /// The fallback decodes its windows may still spend.
    budget: FallbackBudget,
    state: Mutex<CallState>,
    done: Condvar,
}

#[derive(Default)]
struct CallState {
    /// Windows queued or being decoded. The call is done when none is: the last window out
    /// sets the count of its leftovers' windows before it lets go of the lock.
    outstanding: usize,
    /// What decodes left undecoded, waiting for the call's other windows.
    leftovers: Vec<Fragment>,
    /// Segments on the call's timeline, with their channel.
    segments: Vec<(usize, Segment)>,
    error: Option<EngineError>,
}

impl CallWork {
    fn lock(&self) -> MutexGuard<'_, CallState> {
        // A panic while holding the lock leaves plain data behind, still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Job {
    call: Arc<CallWork>,
    window: Window,
}

/// The windows waiting for a worker, one queue per lane.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when windows arrive or the queue closes.
    work: Condvar,
    /// Signalled when windows leave, so a waiting call may add its own.
    room: Condvar,
    /// Windows of new calls that may wait at once; leftovers are always taken, since their
    /// calls' audio is already held.
    capacity: usize,
    batch_size: usize,
    workers: usize,
}

#[derive(Default)]
struct QueueState {
    lanes: [VecDeque<Job>; 3],
    closed: bool,
}

impl QueueState {
    fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a new call's window, waiting while the queue is full. False once closed.
    fn push(&self, job: Job) -> bool {
        let mut state = self.lock();
        while !state.closed && state.len() >= self.capacity {
            state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            return false;
        }
        state.lanes[job.call.lane.index()].push_back(job);
        drop(state);
        self.work.notify_one();
        true
    }

    /// Queues leftover windows without waiting: a worker calls this, and must never block on
    /// the queue it drains.
    fn push_leftovers(&self, jobs: Vec<Job>) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        for job in jobs {
            state.lanes[job.call.lane.index()].push_back(job);
        }
        drop(state);
        self.work.notify_all();
        true
    }

    /// The next batch: waits for a window, then takes up to a fair share of what is queued,
    /// highest lane first, all in the first window's language. `None` once closed and empty.
    fn take(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            if state.len() > 0 {
                break;
            }
            if state.closed {
                return None;
            }
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        // At most an even split of what is queued, so the last windows of a run are not stuck
        // behind one worker's big batch while the others idle.
        let limit = self
            .batch_size
            .min(state.len().div_ceil(self.workers))
            .max(1);
        let mut batch: Vec<Job> = Vec::with_capacity(limit);
        let mut language: Option<String> = None;
        for lane in state.lanes.iter_mut() {
            let mut i = 0;
            while i < lane.len() && batch.len() < limit {
                let same = language
                    .as_deref()
                    .is_none_or(|l| l == lane[i].call.language);
                if same {
                    if let Some(job) = lane.remove(i) {
                        language.get_or_insert_with(|| job.call.language.clone());
                        batch.push(job);
                    }
                } else {
                    i += 1;
                }
            }
        }
        drop(state);
        self.room.notify_all();
        Some(batch)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
        self.room.notify_all();
    }
}

/// A pool of engine workers; cheap to share behind an `Arc`.
pub struct Transcriber {
    engine: Arc<Engine>,
    model_name: String,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("engine", &self.engine)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Transcriber {
    /// Starts one worker per engine replica. `model_name` is recorded in transcripts.
    pub fn new(engine: Engine, model_name: impl Into<String>) -> Self {
        let engine = Arc::new(engine);
        let workers_n = engine.replicas();
        let batch_size = engine.config().batch_size.max(1);
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            // Enough queued windows to refill every worker's next batch while it decodes.
            capacity: workers_n * batch_size * 2,
            batch_size,
            workers: workers_n,
        });
        let counters = Arc::new(Counters::default());
        let workers = (0..workers_n)
            .map(|n| {
                let engine = Arc::clone(&engine);
                let queue = Arc::clone(&queue);
                let counters = Arc::clone(&counters);
                std::thread::Builder::new()
                    .name(format!("callpipe-asr-{n}"))
                    .spawn(move || worker(&engine, &queue, &counters))
                    .expect("spawning an engine worker thread")
            })
            .collect();
        Transcriber {
            engine,
            model_name: model_name.into(),
            queue,
            counters,
            workers,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Time the workers have spent inside the engine (log-mel, encode, decode, align), summed
    /// over workers. Against wall time × replicas it tells how well the pipeline keeps the
    /// engine fed.
    pub fn engine_busy(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.counters.busy_ns.load(Ordering::Relaxed))
    }

    /// What the transcriber has done so far.
    pub fn stats(&self) -> TranscriberStats {
        let c = &*self.counters;
        let at = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TranscriberStats {
            speech_samples: at(&c.speech_samples),
            windows: at(&c.windows),
            leftover_windows: at(&c.leftover_windows),
            batches: at(&c.batches),
            dropped_samples: at(&c.dropped_samples),
        }
    }

    /// Transcribes one call. Blocks until it is done; call it from a blocking thread. Several
    /// calls transcribed at once share the workers, and their windows are batched together.
    pub fn transcribe(&self, channels: &[ChannelSpeech]) -> Result<Transcript, EngineError> {
        self.transcribe_call("", channels)
    }

    /// [`Transcriber::transcribe`] in the upload lane, naming the call (its file or id) in its
    /// log lines.
    pub fn transcribe_call(
        &self,
        call: &str,
        channels: &[ChannelSpeech],
    ) -> Result<Transcript, EngineError> {
        self.transcribe_in(Lane::Upload, call, channels)
    }

    /// [`Transcriber::transcribe_call`] in `lane`: windows of a higher lane are decoded first.
    pub fn transcribe_in(
        &self,
        lane: Lane,
        call: &str,
        channels: &[ChannelSpeech],
    ) -> Result<Transcript, EngineError> {
        // Each channel's speech in call-time order, as the decoder hears a conversation best;
        // then the channels' partial windows share encoder passes. A segment that crosses
        // from one party's piece to the other's is split by its words; the engine aligns for
        // that even when word timestamps are off.
        let windows: Vec<Window> = channels
            .iter()
            .flat_map(|c| pack(c.channel, &c.spans, &c.segments, MAX_WINDOW_SAMPLES))
            .collect();
        let windows = merge_partial(windows, MAX_WINDOW_SAMPLES);
        // Bounds the temperature fallbacks of the whole call, so hours of noise cannot run
        // every fallback on every window.
        let speech: usize = windows.iter().map(|w| w.samples.len()).sum();
        let pieces: usize = windows.iter().flat_map(|w| &w.pieces).map(|p| p.len).sum();
        Counters::add(&self.counters.speech_samples, pieces);

        let (language, language_probability) = match self.engine.fixed_language() {
            Some(code) => (code, 1.0),
            None => self.detect_language(&windows)?,
        };
        let work = Arc::new(CallWork {
            label: call.to_owned(),
            language: language.clone(),
            lane,
            budget: FallbackBudget::for_audio(speech, call),
            state: Mutex::new(CallState {
                outstanding: windows.len(),
                ..CallState::default()
            }),
            done: Condvar::new(),
        });
        let total = windows.len();
        for (sent, window) in windows.into_iter().enumerate() {
            let job = Job {
                call: Arc::clone(&work),
                window,
            };
            if !self.queue.push(job) {
                // The windows never sent will not come back; the sent ones still may.
                let mut state = work.lock();
                state.outstanding -= total - sent;
                state.error.get_or_insert(EngineError::Inference(
                    "the engine workers have stopped".into(),
                ));
                break;
            }
        }

        let mut state = work.lock();
        while state.outstanding > 0 {
            state = work.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let keep_words = self.engine.config().word_timestamps;
        let mut out: Vec<ChannelTranscript> = channels
            .iter()
            .map(|c| ChannelTranscript {
                channel: c.channel,
                role: c.role,
                segments: Vec::new(),
            })
            .collect();
        for (channel, mut segment) in std::mem::take(&mut state.segments) {
            if !keep_words {
                segment.words.clear();
            }
            if let Some(c) = out.iter_mut().find(|c| c.channel == channel) {
                c.segments.push(segment);
            }
        }
        for channel in &mut out {
            channel
                .segments
                .sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        }
        Ok(Transcript {
            language,
            language_probability,
            model: self.model_name.clone(),
            channels: out,
        })
    }

    /// Detects the language from windows spread evenly over the call, all channels included.
    fn detect_language(&self, windows: &[Window]) -> Result<(String, f32), EngineError> {
        let step = windows.len().div_ceil(LANGUAGE_SAMPLE_WINDOWS).max(1);
        let sample: Vec<&[f32]> = windows
            .iter()
            .step_by(step)
            .map(|w| w.samples.as_slice())
            .collect();
        let mut mel = self.engine.log_mel();
        self.engine.detect_language(&mut mel, &sample)
    }
}

impl Drop for Transcriber {
    fn drop(&mut self) {
        // Closing the queue ends the workers once they finish what they hold.
        self.queue.close();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A worker: takes a batch, decodes one pass of each window, hands each result to its call.
fn worker(engine: &Engine, queue: &Queue, counters: &Counters) {
    let mut mel = engine.log_mel();
    while let Some(batch) = queue.take() {
        let starts: Vec<Vec<usize>> = batch.iter().map(|j| j.window.piece_starts()).collect();
        let items: Vec<BatchItem<'_>> = batch
            .iter()
            .zip(&starts)
            .map(|(j, piece_starts)| BatchItem {
                samples: &j.window.samples,
                piece_starts,
            })
            .collect();
        let language = Some(batch[0].call.language.as_str());
        let budgets: Vec<&FallbackBudget> = batch.iter().map(|j| &j.call.budget).collect();
        let started = std::time::Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            engine.decode_pass(&mut mel, &items, language, &budgets)
        }));
        Counters::add(
            &counters.busy_ns,
            usize::try_from(started.elapsed().as_nanos()).unwrap_or(usize::MAX),
        );
        Counters::add(&counters.batches, 1);
        Counters::add(&counters.windows, batch.len());
        let results: Vec<Result<Pass, EngineError>> = match result {
            Ok(Ok(passes)) if passes.len() == batch.len() => passes.into_iter().map(Ok).collect(),
            Ok(Ok(passes)) => batch
                .iter()
                .map(|_| {
                    Err(EngineError::Inference(format!(
                        "{} results for {} windows",
                        passes.len(),
                        batch.len()
                    )))
                })
                .collect(),
            Ok(Err(e)) => {
                let message = e.to_string();
                batch
                    .iter()
                    .map(|_| Err(EngineError::Inference(message.clone())))
                    .collect()
            }
            Err(_) => {
                mel = engine.log_mel();
                batch
                    .iter()
                    .map(|_| {
                        Err(EngineError::Inference(
                            "the engine panicked on this window".into(),
                        ))
                    })
                    .collect()
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            finish_window(job, result, queue, counters);
        }
    }
}

/// Hands a decoded window back to its call: its segments on the call's timeline, and what it
/// left undecoded. The call's last window out packs the call's leftovers into new windows, or
/// wakes the call when nothing is left.
fn finish_window(job: Job, result: Result<Pass, EngineError>, queue: &Queue, counters: &Counters) {
    let Job { call, window } = job;
    let mut state = call.lock();
    match result {
        Ok(pass) => {
            for raw in pass.segments {
                state.segments.extend(to_call_time(&window, raw));
            }
            if let Some(from) = pass.rest_from {
                state.leftovers.extend(window.rest_from(from));
            }
        }
        Err(e) => {
            state.error.get_or_insert(e);
        }
    }
    state.outstanding -= 1;
    if state.outstanding > 0 {
        return;
    }
    let (kept, dropped): (Vec<Fragment>, Vec<Fragment>) = std::mem::take(&mut state.leftovers)
        .into_iter()
        .partition(|f| f.pass < MAX_PASSES);
    if !dropped.is_empty() {
        let samples: usize = dropped.iter().map(|f| f.samples.len()).sum();
        Counters::add(&counters.dropped_samples, samples);
        tracing::warn!(
            call = %call.label,
            seconds = samples as f64 / crate::SAMPLE_RATE as f64,
            passes = MAX_PASSES,
            "pass limit reached: audio the model kept stopping short of is not transcribed"
        );
    }
    let windows = match state.error {
        None => pack_fragments(kept, MAX_WINDOW_SAMPLES),
        Some(_) => Vec::new(),
    };
    state.outstanding = windows.len();
    drop(state);
    if !windows.is_empty() {
        Counters::add(&counters.leftover_windows, windows.len());
        let jobs = windows
            .into_iter()
            .map(|window| Job {
                call: Arc::clone(&call),
                window,
            })
            .collect();
        if queue.push_leftovers(jobs) {
            return;
        }
        let mut state = call.lock();
        state.outstanding = 0;
        state.error.get_or_insert(EngineError::Inference(
            "the engine workers have stopped".into(),
        ));
    }
    call.done.notify_all();
}

/// Moves a segment and its words from window time to the call's timeline.
///
/// With word timings, a segment whose words fall in different pieces of the window (separate
/// utterances, perhaps minutes apart or on the other channel) is split at the seam, and each
/// part spans exactly its words and goes to its piece's channel. Without them, its ends are
/// mapped on their own and it goes to the channel where it starts.
fn to_call_time(window: &Window, raw: RawSegment) -> Vec<(usize, Segment)> {
    let make = |start_s: f64, end_s: f64, text: String, words: Vec<Word>| Segment {
        start_s: round_ms(start_s),
        end_s: round_ms(end_s.max(start_s)),
        text,
        avg_logprob: raw.avg_logprob,
        no_speech_prob: raw.no_speech_prob,
        words,
    };
    if raw.words.is_empty() {
        let start = window.start_to_call(raw.start);
        let end = window.end_to_call(raw.end);
        let channel = window.channel_at(raw.start);
        return vec![(
            channel,
            make(start, end, raw.text.trim().to_owned(), Vec::new()),
        )];
    }
    let mut out = Vec::new();
    let mut group: Vec<Word> = Vec::new();
    let mut group_piece: Option<usize> = None;
    for w in &raw.words {
        let piece = window.piece_of(w.start, w.end);
        if let Some(previous) = group_piece.filter(|&p| p != piece) {
            let channel = window.pieces[previous].channel;
            out.push((channel, group_segment(std::mem::take(&mut group), &make)));
        }
        group_piece = Some(piece);
        let start = window.to_call_in(piece, w.start);
        let end = window.to_call_in(piece, w.end).max(start);
        group.push(Word {
            start_s: round_ms(start),
            end_s: round_ms(end),
            word: w.word.clone(),
            probability: w.probability,
        });
    }
    if let Some(last) = group_piece.filter(|_| !group.is_empty()) {
        out.push((window.pieces[last].channel, group_segment(group, &make)));
    }
    out
}

fn group_segment(
    words: Vec<Word>,
    make: &impl Fn(f64, f64, String, Vec<Word>) -> Segment,
) -> Segment {
    let start = words.first().map_or(0.0, |w| w.start_s);
    let end = words.iter().map(|w| w.end_s).fold(start, f64::max);
    let text: String = words.iter().map(|w| w.word.as_str()).collect();
    make(start, end, text.trim().to_owned(), words)
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(lane: Lane, language: &str) -> Arc<CallWork> {
        Arc::new(CallWork {
            label: format!("{}-{language}", lane.as_str()),
            language: language.into(),
            lane,
            budget: FallbackBudget::new(0, ""),
            state: Mutex::new(CallState::default()),
            done: Condvar::new(),
        })
    }

    fn queue(batch_size: usize, workers: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            capacity: 64,
            batch_size,
            workers,
        }
    }

    fn job(call: &Arc<CallWork>, tag: f32) -> Job {
        Job {
            call: Arc::clone(call),
            window: Window {
                samples: vec![tag],
                pieces: Vec::new(),
            },
        }
    }

    fn tags(batch: &[Job]) -> Vec<f32> {
        batch.iter().map(|j| j.window.samples[0]).collect()
    }

    #[test]
    fn batches_fill_from_every_call_highest_lane_first() {
        let q = queue(4, 1);
        let (backfill, upload, live) = (
            call(Lane::Backfill, "en"),
            call(Lane::Upload, "en"),
            call(Lane::Live, "en"),
        );
        for (c, tag) in [(&backfill, 1.0), (&backfill, 2.0), (&upload, 3.0)] {
            assert!(q.push(job(c, tag)));
        }
        // Leftovers of a live call arrive last and still go first.
        assert!(q.push_leftovers(vec![job(&live, 4.0), job(&live, 5.0)]));
        assert_eq!(tags(&q.take().unwrap()), [4.0, 5.0, 3.0, 1.0]);
        assert_eq!(tags(&q.take().unwrap()), [2.0]);
    }

    #[test]
    fn a_batch_holds_one_language_and_a_fair_share() {
        let q = queue(8, 2);
        let (en, de) = (call(Lane::Upload, "en"), call(Lane::Upload, "de"));
        for (c, tag) in [(&en, 1.0), (&de, 2.0), (&en, 3.0), (&de, 4.0), (&en, 5.0)] {
            assert!(q.push(job(c, tag)));
        }
        // Five queued, two workers: at most three each; the German windows wait their turn,
        // and the last two are split between the workers.
        assert_eq!(tags(&q.take().unwrap()), [1.0, 3.0, 5.0]);
        assert_eq!(tags(&q.take().unwrap()), [2.0]);
        assert_eq!(tags(&q.take().unwrap()), [4.0]);
        q.close();
        assert!(q.take().is_none());
        assert!(!q.push(job(&en, 6.0)), "a closed queue takes nothing");
    }
}

//! The transcription stage's scheduler: calls in, transcripts out, with every engine replica
//! kept busy.
//!
//! Each call's channels are packed into windows ([`crate::pack`]), and the windows go into one
//! bounded queue shared by all calls. One worker thread per replica takes up to `batch_size`
//! windows at a time, from any channel of any call, decodes them in one engine call and sends
//! each result back to its call. A call's transcript is assembled once its last window is back.
//! Workers are plain threads: engine calls block for hundreds of milliseconds and must never
//! run on the async runtime.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use callpipe_common::transcript::{ChannelTranscript, Segment, Transcript, Word};
use callpipe_common::{Role, SpeechSegment};

use crate::engine::{BatchItem, Engine, EngineError, FallbackBudget, RawSegment};
use crate::pack::{merge_partial, pack, AudioSpan, Window, MAX_WINDOW_SAMPLES};

/// Windows sampled across a call to detect its language (multilingual models only).
const LANGUAGE_SAMPLE_WINDOWS: usize = 6;

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

struct Job {
    window: Arc<Window>,
    /// The fallback decodes its call may still spend, shared by the call's windows.
    budget: Arc<FallbackBudget>,
    index: usize,
    language: String,
    reply: Sender<(usize, Result<Vec<RawSegment>, EngineError>)>,
}

/// A pool of engine workers; cheap to share behind an `Arc`.
pub struct Transcriber {
    engine: Arc<Engine>,
    model_name: String,
    jobs: Option<SyncSender<Job>>,
    /// Windows waiting in the queue, so a worker takes no more than its fair share.
    queued: Arc<AtomicUsize>,
    /// Nanoseconds the workers have spent inside the engine, summed over workers.
    busy_ns: Arc<AtomicU64>,
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
        let batch = engine.config().batch_size.max(1);
        // Enough queued windows to refill every worker's next batch while it decodes.
        let (tx, rx) = mpsc::sync_channel::<Job>(workers_n * batch * 2);
        let rx = Arc::new(Mutex::new(rx));
        let queued = Arc::new(AtomicUsize::new(0));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let workers = (0..workers_n)
            .map(|n| {
                let engine = Arc::clone(&engine);
                let rx = Arc::clone(&rx);
                let queued = Arc::clone(&queued);
                let share = Share {
                    batch_size: batch,
                    workers: workers_n,
                    queued,
                    busy_ns: Arc::clone(&busy_ns),
                };
                std::thread::Builder::new()
                    .name(format!("callpipe-asr-{n}"))
                    .spawn(move || worker(&engine, &rx, &share))
                    .expect("spawning an engine worker thread")
            })
            .collect();
        Transcriber {
            engine,
            model_name: model_name.into(),
            jobs: Some(tx),
            queued,
            busy_ns,
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
        std::time::Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }

    /// Transcribes one call. Blocks until it is done; call it from a blocking thread. Several
    /// calls transcribed at once share the workers, and their windows are batched together.
    pub fn transcribe(&self, channels: &[ChannelSpeech]) -> Result<Transcript, EngineError> {
        self.transcribe_call("", channels)
    }

    /// [`Transcriber::transcribe`], naming the call (its file or id) in the warning logged when
    /// the call's budget of fallback decodes runs out.
    pub fn transcribe_call(
        &self,
        call: &str,
        channels: &[ChannelSpeech],
    ) -> Result<Transcript, EngineError> {
        let mut windows: Vec<Window> = channels
            .iter()
            .flat_map(|c| pack(c.channel, &c.spans, &c.segments, MAX_WINDOW_SAMPLES))
            .collect();
        // The channels' partial windows share encoder passes. Word timings split any segment
        // that crosses from one party's piece to the other's; a shared window is aligned for
        // that even when word timestamps are off.
        windows = merge_partial(windows, MAX_WINDOW_SAMPLES);
        let windows: Vec<Arc<Window>> = windows.into_iter().map(Arc::new).collect();
        // Bounds the temperature fallbacks of the whole call, so hours of noise cannot run
        // every fallback on every window.
        let speech: usize = windows.iter().map(|w| w.samples.len()).sum();
        let budget = Arc::new(FallbackBudget::for_audio(speech, call));

        let (language, language_probability) = match self.engine.fixed_language() {
            Some(code) => (code, 1.0),
            None => self.detect_language(&windows)?,
        };

        let (reply, results) = mpsc::channel();
        let jobs = self.jobs.as_ref().expect("workers run until drop");
        for (index, window) in windows.iter().enumerate() {
            let job = Job {
                window: Arc::clone(window),
                budget: Arc::clone(&budget),
                index,
                language: language.clone(),
                reply: reply.clone(),
            };
            self.queued.fetch_add(1, Ordering::SeqCst);
            if jobs.send(job).is_err() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(EngineError::Inference(
                    "the engine workers have stopped".into(),
                ));
            }
        }
        drop(reply);

        let mut decoded: Vec<Option<Vec<RawSegment>>> = vec![None; windows.len()];
        for _ in 0..windows.len() {
            let (index, result) = results
                .recv()
                .map_err(|_| EngineError::Inference("an engine worker stopped mid-call".into()))?;
            decoded[index] = Some(result?);
        }

        let mut out: Vec<ChannelTranscript> = channels
            .iter()
            .map(|c| ChannelTranscript {
                channel: c.channel,
                role: c.role,
                segments: Vec::new(),
            })
            .collect();
        let keep_words = self.engine.config().word_timestamps;
        for (window, segments) in windows.iter().zip(decoded) {
            for raw in segments.unwrap_or_default() {
                for (channel, mut segment) in to_call_time(window, raw) {
                    if !keep_words {
                        segment.words.clear();
                    }
                    if let Some(c) = out.iter_mut().find(|c| c.channel == channel) {
                        c.segments.push(segment);
                    }
                }
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
    fn detect_language(&self, windows: &[Arc<Window>]) -> Result<(String, f32), EngineError> {
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
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// How big a batch a worker may take.
struct Share {
    batch_size: usize,
    workers: usize,
    queued: Arc<AtomicUsize>,
    busy_ns: Arc<AtomicU64>,
}

impl Share {
    /// At most `batch_size`, and at most an even split of what is queued, so the last
    /// windows of a run are not stuck behind one worker's big batch while the others idle.
    fn limit(&self) -> usize {
        let queued = self.queued.load(Ordering::SeqCst);
        self.batch_size
            .min((queued + 1).div_ceil(self.workers))
            .max(1)
    }
}

/// A worker: takes a batch of jobs of one language, decodes it, replies to each job.
fn worker(engine: &Engine, queue: &Mutex<Receiver<Job>>, share: &Share) {
    let mut mel = engine.log_mel();
    let mut held: Option<Job> = None;
    loop {
        let mut batch: Vec<Job> = Vec::with_capacity(share.batch_size);
        if let Some(job) = held.take() {
            batch.push(job);
        }
        {
            let Ok(rx) = queue.lock() else { return };
            if batch.is_empty() {
                match rx.recv() {
                    Ok(job) => {
                        share.queued.fetch_sub(1, Ordering::SeqCst);
                        batch.push(job);
                    }
                    Err(_) => return,
                }
            }
            // Fill the batch with whatever is already queued; never wait for more.
            let limit = share.limit();
            while batch.len() < limit {
                match rx.try_recv() {
                    Ok(job) if job.language == batch[0].language => {
                        share.queued.fetch_sub(1, Ordering::SeqCst);
                        batch.push(job);
                    }
                    Ok(job) => {
                        share.queued.fetch_sub(1, Ordering::SeqCst);
                        held = Some(job);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let starts: Vec<Vec<usize>> = batch
            .iter()
            .map(|j| j.window.pieces.iter().map(|p| p.window_start).collect())
            .collect();
        let audio: Vec<BatchItem<'_>> = batch
            .iter()
            .zip(&starts)
            .map(|(j, piece_starts)| BatchItem {
                samples: &j.window.samples,
                piece_starts,
                needs_words: j
                    .window
                    .pieces
                    .windows(2)
                    .any(|p| p[0].channel != p[1].channel),
            })
            .collect();
        let language = Some(batch[0].language.as_str());
        let budgets: Vec<&FallbackBudget> = batch.iter().map(|j| &*j.budget).collect();
        let started = std::time::Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            engine.transcribe_batch_budgeted(&mut mel, &audio, language, &budgets)
        }));
        share
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(Ok(outputs)) => {
                for (job, segments) in batch.iter().zip(outputs) {
                    let _ = job.reply.send((job.index, Ok(segments)));
                }
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                for job in &batch {
                    let _ = job
                        .reply
                        .send((job.index, Err(EngineError::Inference(message.clone()))));
                }
            }
            Err(_) => {
                mel = engine.log_mel();
                for job in &batch {
                    let _ = job.reply.send((
                        job.index,
                        Err(EngineError::Inference(
                            "the engine panicked on this window".into(),
                        )),
                    ));
                }
            }
        }
    }
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

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
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use callpipe_common::transcript::{ChannelTranscript, Segment, Transcript, Word};
use callpipe_common::{Role, SpeechSegment};

use crate::engine::{BatchItem, Engine, EngineError, RawSegment};
use crate::pack::{pack, Window, MAX_WINDOW_SAMPLES};

/// Windows sampled across a call to detect its language (multilingual models only).
const LANGUAGE_SAMPLE_WINDOWS: usize = 6;

/// One channel of a call, as the front end hands it over.
#[derive(Debug, Clone)]
pub struct ChannelSpeech {
    pub channel: usize,
    pub role: Role,
    /// 16 kHz mono samples of the whole channel.
    pub samples: Vec<f32>,
    /// Where the speech is; only these stretches are transcribed.
    pub segments: Vec<SpeechSegment>,
}

struct Job {
    window: Arc<Window>,
    index: usize,
    language: Option<String>,
    reply: Sender<(usize, Result<Vec<RawSegment>, EngineError>)>,
}

/// A pool of engine workers; cheap to share behind an `Arc`.
pub struct Transcriber {
    engine: Arc<Engine>,
    model_name: String,
    jobs: Option<SyncSender<Job>>,
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
        let workers = (0..workers_n)
            .map(|n| {
                let engine = Arc::clone(&engine);
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("callpipe-asr-{n}"))
                    .spawn(move || worker(&engine, &rx, batch))
                    .expect("spawning an engine worker thread")
            })
            .collect();
        Transcriber {
            engine,
            model_name: model_name.into(),
            jobs: Some(tx),
            workers,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Transcribes one call. Blocks until it is done; call it from a blocking thread. Several
    /// calls transcribed at once share the workers, and their windows are batched together.
    pub fn transcribe(&self, channels: &[ChannelSpeech]) -> Result<Transcript, EngineError> {
        let windows: Vec<Arc<Window>> = channels
            .iter()
            .flat_map(|c| pack(c.channel, &c.samples, &c.segments, MAX_WINDOW_SAMPLES))
            .map(Arc::new)
            .collect();

        let (language, language_probability) = match self.engine.fixed_language() {
            Some(code) => (code, 1.0),
            None => self.detect_language(&windows)?,
        };

        let (reply, results) = mpsc::channel();
        let jobs = self.jobs.as_ref().expect("workers run until drop");
        for (index, window) in windows.iter().enumerate() {
            let job = Job {
                window: Arc::clone(window),
                index,
                language: Some(language.clone()),
                reply: reply.clone(),
            };
            jobs.send(job)
                .map_err(|_| EngineError::Inference("the engine workers have stopped".into()))?;
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
        for (window, segments) in windows.iter().zip(decoded) {
            let Some(channel) = out.iter_mut().find(|c| c.channel == window.channel) else {
                continue;
            };
            for raw in segments.unwrap_or_default() {
                channel.segments.extend(to_call_time(window, raw));
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

/// A worker: takes a batch of jobs of one language, decodes it, replies to each job.
fn worker(engine: &Engine, queue: &Mutex<Receiver<Job>>, batch_size: usize) {
    let mut mel = engine.log_mel();
    let mut held: Option<Job> = None;
    loop {
        let mut batch: Vec<Job> = Vec::with_capacity(batch_size);
        if let Some(job) = held.take() {
            batch.push(job);
        }
        {
            let Ok(rx) = queue.lock() else { return };
            if batch.is_empty() {
                match rx.recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => return,
                }
            }
            // Fill the batch with whatever is already queued; never wait for more.
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(job) if job.language == batch[0].language => batch.push(job),
                    Ok(job) => {
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
            })
            .collect();
        let language = batch[0].language.as_deref();
        let result = catch_unwind(AssertUnwindSafe(|| {
            engine.transcribe_batch(&mut mel, &audio, language)
        }));
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
/// utterances, perhaps minutes apart in the call) is split at the seam, and each part spans
/// exactly its words. Without them, its ends are mapped on their own.
fn to_call_time(window: &Window, raw: RawSegment) -> Vec<Segment> {
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
        return vec![make(start, end, raw.text.trim().to_owned(), Vec::new())];
    }
    let mut out = Vec::new();
    let mut group: Vec<Word> = Vec::new();
    let mut group_piece = None;
    for w in &raw.words {
        let piece = window.piece_of(w.start, w.end);
        if group_piece.is_some_and(|p| p != piece) {
            out.push(group_segment(std::mem::take(&mut group), &make));
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
    if !group.is_empty() {
        out.push(group_segment(group, &make));
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

"""Encoder-decoder speech recognition (Whisper): does the artifact transcribe what the original does?

Rules:
1. A speech recogniser that is an encoder-decoder (config `is_encoder_decoder`: Whisper) is judged by this family,
   not the CTC one (`CtcRecognition.for_source` hands it over). It runs through the generation loop
   (runtimes/generation.py rule 4): its source is a clip's features from the model's feature extractor
   (`input_features`), its decoder is teacher-forced on the clip's reference transcript after its first token, then
   generates greedily from the first token.
2. Clips are the audio data of data.py rule 7 with what each says: a `.jsonl` of clips and their transcripts, or the
   built-in clips and their texts. A folder of clips without transcripts is a usage error: a recogniser is judged
   against what its clips say.
3. Figures: the generation family's over the teacher-forced transcript (perplexity and its increase, next-token
   agreement, KL; `max_ppl_increase` and `min_token_agreement` gate) and the greedy transcripts, decoded by the
   model's tokenizer (special tokens skipped): their token and word error rates against the original's and the
   share identical (`transcripts`), and word accuracy, 1 − WER, of both against the references (`word_accuracy`,
   gated by `max_drop.word_accuracy`, bootstrap intervals over clips), as for a CTC recogniser.
4. The benchmark's workload is the first evaluation clip, `new_tokens` tokens generated greedily; time to first
   token includes the encoder.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..runtimes.generation import AUDIO_FEATURES, DECODER_INPUT_IDS, NEW_TOKENS
from ..stages import metrics
from .base import register
from .generation import Generation, bind_encoder_decoder, decoded
from .sequence import error_rates, references, word_accuracy


@register
class SpeechToText(Generation):
    name = "speech2text"
    tasks = ()  # rule 1: chosen for an encoder-decoder by the CTC family, which owns the task's name
    start_id = 0
    tokenizer = None

    def for_source(self, source) -> "SpeechToText":
        return bind_encoder_decoder(SpeechToText(), source)  # a missing tokenizer: a usage error in samples (rule 2)

    def modality(self, declared, specs, tokenizer=None) -> str:
        return "audio"

    def samples(self, req):
        from .. import data

        fe, tokenizer = req.feature_extractor, req.tokenizer or self.tokenizer
        if fe is None or tokenizer is None:
            raise UsageError("a speech recogniser needs its feature extractor (preprocessor_config.json) and its tokenizer "
                             "beside it; add them")
        rate = int(getattr(fe, "sampling_rate", 16000))
        clips, _, texts, origin = data._clips(req, rate)
        if texts is None:  # rule 2
            raise UsageError(f"--data {req.data}: a speech recogniser is judged against what its clips say: give a .jsonl "
                             'of {"audio": PATH, "text": ...} records (or no --data: the built-in clips and their texts)')
        notes: list[str] = []
        # weight-only compression calibrates on nothing: every clip but one is evaluated (clips are few)
        ev_i, cal_i = data._split(list(range(len(clips))), req.n_eval, 1, req.seed, notes)

        def feed(i: int, new_tokens: int) -> dict[str, np.ndarray]:
            wave, clip_rate = data.read_wav(clips[i])
            features = fe(data.resample(wave, clip_rate, rate), sampling_rate=rate, return_tensors="np")[AUDIO_FEATURES]
            target = list(tokenizer(texts[i], add_special_tokens=False)["input_ids"])
            return {AUDIO_FEATURES: np.ascontiguousarray(features, dtype=np.float32),
                    DECODER_INPUT_IDS: np.array([[self.start_id] + target], dtype=np.int64),
                    NEW_TOKENS: np.array([new_tokens], dtype=np.int64)}

        evaluation = [feed(i, req.new_tokens) for i in ev_i]
        notes.append("each evaluation clip's transcript teacher-forced after the decoder's first token (perplexity, next-token "
                     f"agreement), then {req.new_tokens} tokens generated greedily from it (the transcripts compared)")
        bench = {**evaluation[0], DECODER_INPUT_IDS: np.array([[self.start_id]], dtype=np.int64)}
        return data.Samples([feed(i, 0) for i in cal_i], evaluation, bench, origin, False, notes, [texts[i] for i in ev_i])

    def prompt_workloads(self, samples, prompt_lengths):
        return {}

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        """Rule 3."""
        result = super().task_metrics(expected, outputs, output_names, labels, masks)
        tk = list(output_names).index("tokens")
        ref_ids = [np.asarray(e[tk]).ravel().tolist() for e in expected]
        art_ids = [np.asarray(o[tk]).ravel().tolist() for o in outputs]
        original, artifact = [decoded(self.tokenizer, t) for t in ref_ids], [decoded(self.tokenizer, t) for t in art_ids]
        rates = error_rates(ref_ids, art_ids, original, artifact)
        result.transcripts = {"token_error_rate": rates["token_error_rate"],
                              "identical": float(np.mean([r == a for r, a in zip(original, artifact)])) if original else 1.0,
                              "word_error_rate": rates["word_error_rate"]}
        texts = references(labels)
        if texts is not None:
            result.task_metrics["word_accuracy"] = word_accuracy(texts, original, artifact)
            result.labelled_samples = len(texts)
        return result

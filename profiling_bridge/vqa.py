"""The quality harness's text side: the LLaVA-1.5 prompt and the answer metrics (official VQA accuracy, exact match).

Prompts are ``USER: <image>\\n{question} ASSISTANT:`` with the ``<image>`` placeholder repeated vision_tokens
times; the same :func:`prompt_ids` builds them for the harness (:mod:`profiling_bridge.quality`, its batched form
:mod:`profiling_bridge.batch_eval`) and for training (:mod:`profiling_bridge.tiny_vqa`).
"""

from __future__ import annotations

import re

import numpy as np
from scipy.special import softmax

METRICS = ("vqa", "exact_match")
PROMPT = ("USER: ", "\n{question} ASSISTANT:")  # text before and after the image placeholders


# --------------------------------------------------------------------------- prompt
def prompt_ids(tokenizer, question: str, vision_tokens: int, image_token_id: int, bos: int | None) -> list[int]:
    before, after = PROMPT
    head = [bos] if bos is not None else []
    return head + tokenizer.encode(before) + [image_token_id] * vision_tokens + tokenizer.encode(after.format(question=question))


# --------------------------------------------------------------------------- metrics
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_NUMBERS = dict(none="0", zero="0", one="1", two="2", three="3", four="4", five="5", six="6", seven="7",
                eight="8", nine="9", ten="10")
_ARTICLES = {"a", "an", "the"}
# The common part of the official contraction table (written without apostrophe -> with).
_CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hes": "he's", "im": "i'm",
    "isnt": "isn't", "itll": "it'll", "ive": "i've", "lets": "let's", "shes": "she's", "shouldnt": "shouldn't",
    "thats": "that's", "theres": "there's", "theyre": "they're", "wasnt": "wasn't", "werent": "weren't",
    "whats": "what's", "wont": "won't", "wouldnt": "wouldn't", "youre": "you're", "youve": "you've",
}


def normalize_vqa(text: str) -> str:
    """The official VQA answer normalization (punctuation, number words, articles, contractions)."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers) -> float:
    """Standard VQA accuracy: mean over leave-one-out subsets of min(1, #matches / 3).

    That is the official formula for VQAv2's 10 references (used from 4 references on). With fewer than
    4 references a unanimous answer could never score 1, so there it is min(1, #matches / n).
    """
    pred = normalize_vqa(prediction)
    gts = [normalize_vqa(a) for a in answers]
    matches = sum(g == pred for g in gts)
    if len(gts) < 4:
        return min(1.0, matches / len(gts))
    return float(np.mean([min(1.0, (matches - (g == pred)) / 3.0) for g in gts]))


def exact_match(prediction: str, answers) -> float:
    """1.0 if the prediction equals any reference after lower-casing, trimming and collapsing spaces."""
    def norm(s):
        return " ".join(s.lower().strip().rstrip(".").split())
    return float(norm(prediction) in {norm(a) for a in answers})



METRIC_FNS = dict(vqa=vqa_accuracy, exact_match=exact_match)


# --------------------------------------------------------------------------- graded quality
def answer_candidates(items, tokenizer) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The answer vocabulary of a dataset: every distinct reference answer of ``items`` (sorted) and its token ids."""
    texts = tuple(sorted({a for it in items for a in it.answers}))
    return texts, tuple(tuple(tokenizer.encode(a)) for a in texts)


def candidate_scores(items, texts) -> np.ndarray:
    """``[N, A]``: each item's metric of each candidate answer taken as the prediction."""
    return np.array([[METRIC_FNS[it.metric](a, it.answers) for a in texts] for it in items], dtype=np.float64)


def graded_scores(logp: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Graded quality ``[N]``: the expected metric under the model's distribution restricted to the candidates.

    ``logp [N, A]``: teacher-forced log-probability of each candidate's tokens given the prompt; the softmax over the
    candidates renormalizes it to the answer vocabulary (for one-token answers: the softmax of the next-token
    logits restricted to the candidate tokens). With an exact-match metric it is the probability of a correct answer.
    """
    return np.clip((softmax(np.asarray(logp, dtype=np.float64), axis=-1) * scores).sum(-1), 0.0, 1.0)  # rounding

"""Token classification (NER): align word tags to sub-words, predict, decode, score.

Scoring is at word level against the full gold tags of the split: each word's prediction
is the one at its first sub-word, and a word cut off by ``max_length`` counts as ``O``, so
truncation costs recall instead of silently shrinking the test set.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from peftpipe import intervals as _intervals
from peftpipe.errors import DataError
from peftpipe.tasks import fields, heads
from peftpipe.tasks.base import Task

PIPELINE_TAG = "token-classification"
REFERENCE_NAME = "all O"
PER_CLASS_KEY = "per_type"
# Columns the model's forward takes; the others (tokens, tags, word_ids) are for scoring.
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels")
IGNORE = -100


# --------------------------------------------------------------------------- data


def canonical(frame: pd.DataFrame, data, labels: dict[int, str], where: str) -> tuple[pd.DataFrame, int]:
    """Canonical columns (tokens, tags as names, IOB2; a `group` column is kept) and how
    many rows' tags were fixed or converted. ``labels`` names integer tag ids."""
    if data.columns.tokens == data.columns.tags:
        raise DataError(f"{where}: data.columns.tokens and data.columns.tags both name {data.columns.tags!r}; "
                        f"found {', '.join(map(str, frame.columns))}: which holds the words, which the tags?")
    wanted = {data.columns.tokens: "tokens", data.columns.tags: "tags"}
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))} "
            f"(set data.columns.tokens / data.columns.tags)"
        )
    groups = frame["group"].to_numpy() if "group" in frame else None
    frame = frame[list(wanted)].rename(columns=wanted)
    rows = [f"{where}: row {i}" for i in range(len(frame))]
    tokens = [fields.words(t, "tokens", row) for t, row in zip(frame["tokens"], rows)]
    given = [fields.word_list(t, "tags", "tag", "a tag", row) for t, row in zip(frame["tags"], rows)]
    written = [_tag_names(row_tags, labels, row) for row_tags, row in zip(given, rows)]
    # b-per read as B-per is said, not done silently (download prints it from attrs).
    recased = sum(any(isinstance(t, str) and t.strip() != n for t, n in zip(g, w)) for g, w in zip(given, written))
    tags = [to_iob2(row_tags, data.tag_scheme, row) for row_tags, row in zip(written, rows)]
    for i, (words, row_tags) in enumerate(zip(tokens, tags)):
        if len(words) != len(row_tags):
            raise DataError(f"{where}: row {i}: {len(words)} tokens but {len(row_tags)} tags")
        blank = [j for j, word in enumerate(words) if not word.strip()]
        if blank:
            # A blank word has no sub-words, so its tag could never be predicted.
            raise DataError(f"{where}: row {i}: token {blank[0]} is empty or whitespace")
    # Rows with no tokens carry nothing to learn or score; they are dropped (and counted).
    keep = [i for i, words in enumerate(tokens) if words]
    valid = {i: _valid_bio(tags[i], data.on_invalid_bio, f"{where}: row {i}") for i in keep}
    repaired = sum(valid[i] != written[i] for i in keep)  # IOB1 fixed, io/bioes converted
    out = pd.DataFrame({"tokens": [tokens[i] for i in keep], "tags": [valid[i] for i in keep]})
    if groups is not None:
        out["group"] = groups[keep]
    out.attrs["recased_tag_rows"] = recased
    return out, repaired


def sentences_from_word_rows(frame: pd.DataFrame, columns, where: str) -> pd.DataFrame:
    """One word per row to one sentence per row (token and tag lists), in file order: rows
    belong to the sentence ``columns.sentence`` names; a blank there continues the sentence
    above (Kaggle's ner_dataset.csv names it on a sentence's first word only). A `group`
    column keeps its first value per sentence."""
    missing = [c for c in (columns.sentence, columns.tokens, columns.tags) if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))} "
                        f"(set data.columns.sentence / data.columns.tokens / data.columns.tags)")
    names, current = [], None
    for row, value in enumerate(frame[columns.sentence]):
        if not (fields.is_null(value) or (isinstance(value, str) and not value.strip())):
            current = value
        elif current is None:
            raise DataError(f"{where}: row {row} names no sentence in {columns.sentence!r}, and no row above does")
        names.append(current)
    starts = np.ones(len(names), dtype=bool)
    starts[1:] = [a != b for a, b in zip(names[1:], names[:-1])]
    sentence = np.cumsum(starts) - 1  # consecutive rows of one name: a name seen again later is a new sentence
    keep = [columns.tokens, columns.tags] + (["group"] if "group" in frame else [])
    grouped = frame[keep].groupby(sentence, sort=True)
    out = grouped[[columns.tokens, columns.tags]].agg(list)
    if "group" in frame:
        out["group"] = grouped["group"].first()
    return out.reset_index(drop=True)


def _tag_names(tags: list, labels: dict[int, str], where: str) -> list[str]:
    """Tags as names: integer ids (tner's data sets, hub ClassLabel columns) are looked up
    in data.labels (or the hub's names)."""
    ids = [is_tag_id(t) for t in tags]
    if not any(ids):
        names = [normal_tag(str(t)) for t in tags]
        bare = [i for i, name in enumerate(names) if name in SCHEME_PREFIXES]
        if bare:  # "B-" would train and score an entity type named ""
            raise DataError(f"{where}: tag {bare[0]} ({names[bare[0]]!r}) has no entity type after its prefix; "
                            f"write it as e.g. {names[bare[0]]}PER")
        return names
    if not all(ids):
        position = ids.index(not ids[0])
        raise DataError(f"{where}: tag {position} ({tags[position]!r}) is {'an id' if ids[position] else 'a name'}, "
                        f"but tag 0 is {'an id' if ids[0] else 'a name'}; use tag names, or ids into data.labels")
    return fields.names_from_ids(tags, labels, "tag", "label names", where)


SCHEME_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


def is_tag_id(tag) -> bool:
    """An integer tag id (tner's data sets, hub ClassLabel columns), not a name; a bool is neither."""
    return isinstance(tag, (int, np.integer)) and not isinstance(tag, (bool, np.bool_))


def normal_tag(tag: str) -> str:
    """A tag with its scheme letter upper-cased (b-org -> B-org, o -> O) and spaces trimmed:
    seqeval reads only upper-case prefixes, so b-org was scored as an entity type of its own."""
    tag = tag.strip()
    if tag == "o":
        return "O"
    return tag[:2].upper() + tag[2:] if tag[:2].upper() in SCHEME_PREFIXES else tag


def to_iob2(tags: list[str], scheme: str, where: str) -> list[str]:
    """Tags in IOB2 from data.tag_scheme: io (bare types) and bioes (S-, E-; or BILOU's U-, L-) are converted;
    in iob2 a tag with no B-/I- prefix stops, since it would be scored as nonsense."""
    if scheme == "io":
        converted, previous = [], "O"
        for tag in tags:
            kind = tag[2:] if tag[:2] in ("B-", "I-") else tag
            converted.append("O" if tag == "O" else
                             f"B-{kind}" if tag.startswith("B-") or previous != kind else f"I-{kind}")
            previous = "O" if tag == "O" else kind
        return converted
    if scheme == "bioes":  # BILOU (spaCy's) names the same tags U- and L-
        tags = ["B-" + t[2:] if t.startswith(("S-", "U-")) else "I-" + t[2:] if t.startswith(("E-", "L-")) else t
                for t in tags]
    for position, tag in enumerate(tags):
        if tag != "O" and tag[:2] not in ("B-", "I-"):
            raise DataError(
                f"{where}: tag {tag!r} at token {position} has no B-/I- prefix (data.tag_scheme is {scheme}); "
                f"set data.tag_scheme: io if the tags are bare entity types, bioes for S-/E- (or U-/L-) tags")
    return tags


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Start every entity with B-: an I-X that does not continue an X becomes B-X.

    This converts IOB1 (CoNLL-2003's original files) to IOB2 and leaves valid IOB2 as is.
    """
    fixed, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        fixed.append(tag)
        previous = tag
    return fixed


def _valid_bio(tags: list[str], policy: str, where: str) -> list[str]:
    """IOB2 tags: an I-X that does not continue an X is fixed to B-X (IOB1 -> IOB2) or
    rejected, per data.on_invalid_bio."""
    fixed = iob1_to_iob2(tags)
    if policy == "reject" and fixed != tags:
        position = next(j for j, (a, b) in enumerate(zip(tags, fixed)) if a != b)
        raise DataError(
            f"{where}: tag {tags[position]} at token {position} does not continue an entity "
            f"(I- without B-); set data.on_invalid_bio: fix to convert such tags to B-"
        )
    return fixed


def row_keys(frame: pd.DataFrame) -> list:
    """What makes two rows the same example (leakage between splits)."""
    return [tuple(t) for t in frame["tokens"]]


def label_values(frame: pd.DataFrame) -> set[str]:
    return {tag for row in frame["tags"] for tag in row}


def default_labels(splits: dict[str, pd.DataFrame]) -> list[str]:
    """O first, then entity types alphabetically, B- before I- (a stable id order)."""
    seen = set().union(*(label_values(frame) for frame in splits.values()))
    return ["O"] + sorted(seen - {"O"}, key=lambda t: (t[2:], t[:2]))


def hub_label_names(features, data) -> list[str]:
    feature = features.get(data.columns.tags)
    return list(getattr(getattr(feature, "feature", None), "names", None) or [])


def entity_counts(tags: pd.Series) -> dict[str, int]:
    """How many entities of each type (B- tags) a split holds."""
    counts = Counter(tag[2:] for row in tags for tag in row if tag.startswith("B-"))
    return dict(sorted(counts.items()))


def data_report(splits: dict[str, pd.DataFrame]) -> dict:
    """Per split: rows, tokens, entities per type; for validation/test also how many rows
    repeat a train sentence (leakage) and which entity types train never shows."""
    train_sentences = set(row_keys(splits["train"])) if "train" in splits else set()
    train_types = set(entity_counts(splits["train"]["tags"])) if "train" in splits else set()
    report = {}
    for name, frame in splits.items():
        entities = entity_counts(frame["tags"])
        report[name] = {
            "rows": len(frame),
            "tokens": int(sum(len(t) for t in frame["tokens"])),
            "entities": entities,
        }
        if name != "train":
            report[name]["rows_also_in_train"] = sum(k in train_sentences for k in row_keys(frame))
            report[name]["types_missing_from_train"] = sorted(set(entities) - train_types)
    return report


# --------------------------------------------------------------------------- model


def continuation_labels(labels: list[str]) -> list[int]:
    """For each label id, the id a continuation sub-word gets: B-X becomes I-X when it exists."""
    index = {name: i for i, name in enumerate(labels)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(labels)]


def align_labels(word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool,
                 continuation: list[int]) -> list[int]:
    """First sub-word of a word gets its label; special tokens get -100; continuation
    sub-words get -100, or the word's I- label when ``label_all_tokens``."""
    aligned, previous = [], None
    for word in word_ids:
        if word is None:
            aligned.append(IGNORE)
        elif word != previous:
            aligned.append(word_labels[word])
        else:
            aligned.append(continuation[word_labels[word]] if label_all_tokens else IGNORE)
        previous = word
    return aligned


def tokenize(frame: pd.DataFrame, tokenizer, labels: list[str], params):
    """A datasets.Dataset with model inputs, aligned labels, word_ids and the gold tags."""
    import datasets

    max_length, label_all_tokens = params.model.max_length, params.tokenize.label_all_tokens
    label_ids = {name: i for i, name in enumerate(labels)}
    continuation = continuation_labels(labels)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        encoded["labels"], encoded["word_ids"] = [], []
        for i, tags in enumerate(batch["tags"]):
            word_ids = encoded.word_ids(i)
            word_labels = [label_ids[t] for t in tags]
            encoded["labels"].append(align_labels(word_ids, word_labels, label_all_tokens, continuation))
            encoded["word_ids"].append([-1 if w is None else w for w in word_ids])
        return encoded

    dataset = datasets.Dataset.from_pandas(frame[["tokens", "tags"]], preserve_index=False)
    return dataset.map(encode, batched=True, desc="tokenize")


def load_model(path: str, labels: list[str], revision: str | None = None, **options):
    """The base model with a new token-classification head sized for ``labels``."""
    return heads.load_with_head("AutoModelForTokenClassification", path, labels, revision, options,
                                "has no token-classification head; use an encoder such as BERT, RoBERTa or DeBERTa for task.kind token_classification")


def truncation(dataset) -> dict:
    """Rows cut at model.max_length, and the words lost (they are scored as O)."""
    cut = [len(tokens) - (max(word_ids) + 1) for tokens, word_ids in zip(dataset["tokens"], dataset["word_ids"])]
    return {"rows": len(cut), "rows_cut": sum(c > 0 for c in cut), "words_cut": sum(cut)}


def peft_task_type(model) -> str:
    return "TOKEN_CLS"


head_modules = heads.head_modules


def collator(tokenizer):
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)


def model_inputs(dataset):
    return dataset.select_columns([c for c in MODEL_COLUMNS if c in dataset.column_names])


def gold(dataset) -> list[list[str]]:
    return list(dataset["tags"])


def train_label_ids(dataset) -> list[int]:
    """Every labelled sub-word's label id (for class weights)."""
    return [i for row in dataset["labels"] for i in row if i != IGNORE]


def predict_logits(model, dataset, batch_size: int, data_collator, labels: list[str]) -> list[np.ndarray]:
    """Logits per example (positions x labels), batched by length to waste no padding."""
    return heads.predict_in_length_order(model, model_inputs(dataset).remove_columns("labels"), batch_size,
                                         data_collator)


def decode(logits: list[np.ndarray], dataset, labels: list[str], tokenizer=None) -> list[list[str]]:
    """Word-level tags: each word takes the prediction at its first sub-word; words cut by
    truncation are ``O``."""
    predictions = []
    for row_logits, word_ids, tags in zip(logits, dataset["word_ids"], dataset["tags"]):
        words = ["O"] * len(tags)
        previous = -1
        for position, word in enumerate(word_ids):
            if word >= 0 and word != previous:
                words[word] = labels[int(row_logits[position].argmax())]
            previous = word
        predictions.append(words)
    return predictions


def pipeline_outputs(model, tokenizer, texts: list[str], batch_size: int, aggregation_strategy: str = "first",
                     stride: int = 0) -> list[list[dict]]:
    """Per text, the entity groups the transformers token-classification pipeline gives with
    these options ({entity_group, score, start, end}), without its per-token Python work:
    one tokenizer call for every text, windows of similar length ``batch_size`` to a model
    call, scores and word starts as arrays. The pipeline spent a third of a served batch
    outside the model (postprocess alone a quarter); this spends a few percent. The groups
    follow the pipeline's rules (a word is tagged by its first sub-word; adjacent words of
    one type group unless a word starts with B-; "O" dropped; where windows overlap, the
    longer span wins), which tests check against the pipeline itself. ``stride``: the overlap
    of a long text's windows (pipeline_options: a quarter of the window)."""
    import torch

    if aggregation_strategy != "first":
        raise ValueError(f"aggregation_strategy {aggregation_strategy!r}: only 'first' is computed here")
    if not texts:
        return []
    windows = tokenizer(texts, truncation=True, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, return_special_tokens_mask=True)
    owner = windows["overflow_to_sample_mapping"]  # each window's text
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in windows]
    subword = _subword_rule(tokenizer)
    id2label = model.config.id2label
    found: list[list[dict]] = [[] for _ in texts]
    # An empty window (an empty text, where the tokenizer adds no special tokens) has no groups.
    per_window: dict[int, list[dict]] = {w: [] for w in range(len(owner)) if not windows["input_ids"][w]}
    order = sorted((w for w in range(len(owner)) if w not in per_window), key=lambda w: len(windows["input_ids"][w]))
    for first in range(0, len(order), max(1, batch_size)):
        batch = order[first:first + max(1, batch_size)]
        width = max(len(windows["input_ids"][w]) for w in batch)
        arrays = {name: np.full((len(batch), width), tokenizer.pad_token_id if name == "input_ids" else 0,
                                dtype=np.int64) for name in names}
        # Padded on the right whatever the tokenizer's padding_side: on the left, an encoder's
        # positions would shift and a window's answer would depend on the others in its batch.
        for row, w in enumerate(batch):
            for name in names:
                arrays[name][row, :len(windows[name][w])] = windows[name][w]
        with torch.inference_mode():
            output = model(**{name: torch.from_numpy(array) for name, array in arrays.items()})
        logits = output["logits"].float().numpy()  # a ModelOutput, or the ONNX graph's
        scores = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        for row, w in enumerate(batch):
            n = len(windows["input_ids"][w])
            per_window[w] = _window_groups(texts[owner[w]], np.asarray(windows["input_ids"][w]),
                                           np.asarray(windows["offset_mapping"][w], dtype=np.int64).reshape(-1, 2),
                                           np.asarray(windows["special_tokens_mask"][w], dtype=bool),
                                           scores[row, :n], subword, tokenizer.unk_token_id, id2label)
    for w, text_index in enumerate(owner):  # windows in text order
        found[text_index].extend(per_window[w])
    # One window's groups never overlap, so this changes only a text read in several.
    return [_longest_overlapping(groups) for groups in found]


def _subword_rule(tokenizer):
    """(ids, starts, ends, text) -> whether each token continues the word before it, as the
    pipeline decides: by the token's length against its text where the tokenizer marks
    continuations ("##me": 4 characters for the text's 2), else by a space before it."""
    model = getattr(getattr(tokenizer, "_tokenizer", None), "model", None)
    if getattr(model, "continuing_subword_prefix", None):
        # The window's own tokens only: a table of the whole vocabulary, built per call, took
        # a sixth of the served model's time.
        return lambda ids, starts, ends, text: np.fromiter(
            map(len, tokenizer.convert_ids_to_tokens(ids.tolist())), dtype=np.int64, count=len(ids)) != ends - starts
    return lambda ids, starts, ends, text: np.array(
        [start > 0 and " " not in text[start - 1:start + 1] for start in starts.tolist()], dtype=bool)


def _window_groups(text, ids, offsets, special, scores, subword, unk_id, id2label) -> list[dict]:
    """One window's entity groups: words tagged by their first sub-word, grouped by type."""
    keep = ~special
    ids, starts, ends, scores = ids[keep], offsets[keep, 0], offsets[keep, 1], scores[keep]
    if not len(ids):
        return []
    continues = subword(ids, starts, ends, text) & (ids != unk_id)
    continues[0] = False
    heads_at = np.flatnonzero(~continues)
    last_at = np.append(heads_at[1:] - 1, len(ids) - 1)
    best = scores[heads_at].argmax(axis=-1)
    word_scores = scores[heads_at, best]
    groups: list[dict] = []
    members: list[float] = []
    last_tag = None
    for word, (head, last) in enumerate(zip(heads_at.tolist(), last_at.tolist())):
        bi, tag = _bio(id2label[int(best[word])])
        if groups and tag == last_tag and bi != "B":
            groups[-1]["end"] = int(ends[last])
            members.append(word_scores[word])
            continue
        if groups:
            groups[-1]["score"] = np.nanmean(np.array(members, dtype=np.float32))
        # The group's name as the pipeline writes it: its first word's label after the first "-".
        name = id2label[int(best[word])].split("-", 1)[-1]
        groups.append({"entity_group": name, "start": int(starts[head]), "end": int(ends[last])})
        members, last_tag = [word_scores[word]], tag
    groups[-1]["score"] = np.nanmean(np.array(members, dtype=np.float32))
    return [group for group in groups if group["entity_group"] != "O"]


def _bio(label: str) -> tuple[str, str]:
    """(B or I, type) as the pipeline reads a label: no B-/I- prefix counts as I."""
    return (label[0], label[2:]) if label[:2] in ("B-", "I-") else ("I", label)


def _longest_overlapping(groups: list[dict]) -> list[dict]:
    """Where windows overlap, one group per place: the longer (then higher-scored) wins."""
    if not groups:
        return groups
    groups = sorted(groups, key=lambda group: group["start"])
    kept, previous = [], groups[0]
    for group in groups:
        if previous["start"] <= group["start"] < previous["end"]:
            length, previous_length = group["end"] - group["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and group["score"] > previous["score"]):
                previous = group
        else:
            kept.append(previous)
            previous = group
    kept.append(previous)
    return kept


def pipeline_input(example: dict) -> str:
    """What the token-classification pipeline reads for a tokenized example: its words."""
    return " ".join(example["tokens"])


def prediction_rows(dataset, predicted: list[list[str]]) -> list[dict]:
    """data/predictions/test.jsonl: the words, their gold tags, the predicted tags."""
    return [{"tokens": tokens, "gold": gold, "predicted": pred}
            for tokens, gold, pred in zip(dataset["tokens"], dataset["tags"], predicted)]


def confusion_rows(gold: list[list[str]], predicted: list[list[str]]) -> list[dict]:
    """One row per word: its gold and predicted entity type (O outside entities), for DVC's
    confusion template. Word level, so a type mix-up and a missed entity both show."""
    def kind(tag: str) -> str:
        return tag[2:] if tag[:2] in ("B-", "I-") else tag

    return [{"actual": kind(g), "predicted": kind(p)}
            for gold_row, pred_row in zip(gold, predicted) for g, p in zip(gold_row, pred_row)]


def reference_predictions(train_gold: list[list[str]], gold: list[list[str]]) -> list[list[str]]:
    """The trivial reference: every word is O."""
    return [["O"] * len(tags) for tags in gold]


def compute_metrics(gold: list[list[str]], predicted: list[list[str]], labels: list[str] | None = None) -> dict:
    """seqeval entity-level precision/recall/F1 (overall and per type) and token accuracy."""
    from seqeval.metrics import accuracy_score, classification_report

    if not gold:
        raise DataError("cannot score an empty split")
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    micro, macro = report["micro avg"], report["macro avg"]
    return {
        "overall": {
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]),
            "macro_f1": float(macro["f1-score"]),
            "accuracy": float(accuracy_score(gold, predicted)),
        },
        "per_type": {
            name: {
                "precision": float(row["precision"]),
                "recall": float(row["recall"]),
                "f1": float(row["f1-score"]),
                "support": int(row["support"]),
            }
            for name, row in sorted(report.items())
            if not name.endswith(" avg")
        },
        "examples": len(gold),
    }


def trainer_metrics(labels: list[str], model=None):
    """compute_metrics for the Trainer's evaluation on validation (labelled sub-words)."""

    def compute(eval_prediction) -> dict:
        logits, label_ids = eval_prediction
        predicted_ids = logits.argmax(-1)
        gold, predicted = [], []
        for row_pred, row_gold in zip(predicted_ids, label_ids):
            keep = row_gold != IGNORE
            gold.append([labels[i] for i in row_gold[keep]])
            predicted.append([labels[i] for i in row_pred[keep]])
        overall = compute_metrics(gold, predicted)["overall"]
        return {"f1": overall["f1"], "precision": overall["precision"], "recall": overall["recall"]}

    return compute


class TokenClassification(Task, module=__name__):
    kind = "token_classification"
    head_suffix = "ForTokenClassification"
    per_token = True

    def f1_meaning(self, labels: list[str]) -> str:
        return "entity-level micro F1 (seqeval)"

    def labels_in(self, gold) -> set[str]:
        return set(map(str, gold))

    def counts(self, gold, predicted, labels):
        return _intervals.entity_counts(gold, predicted)

    def scores(self, labels):
        return _intervals.entity_scores

    def pipeline_options(self, tokenizer) -> dict:
        # A text longer than one window is read in overlapping windows (a quarter overlap),
        # so its tail is tagged too instead of being cut off.
        stride = tokenizer.model_max_length // 4 if tokenizer is not None else 0
        # "first": a word's tag is its first sub-word's, as training labels it and evaluate
        # scores it, so a span covers whole words ("simple" tagged "Ac" and left "me" of "Acme").
        return {"aggregation_strategy": "first", **({"stride": stride} if stride else {})}

    def answer_row(self, given, answer) -> dict:
        return {"text": given, "entities": answer}

    def answer(self, text, output, tokens: int | None, limit: int) -> list[dict]:
        """Entity spans; a span's ``word`` is cut from the input text by its offsets, so an
        uncased model still shows the text as written."""
        return [{"word": text[s["start"]:s["end"]], "type": s["entity_group"], "score": round(float(s["score"]), 4),
                 "start": int(s["start"]), "end": int(s["end"])} for s in output]

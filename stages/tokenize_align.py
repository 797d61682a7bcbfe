"""tokenize-align: tokenize data/split with the model's tokenizer (NER: align tags to sub-words).

(Not named tokenize.py: a script's folder comes first on sys.path, and that name would
shadow the standard library's tokenize module.)
"""


import pandas as pd

from peftpipe.artifacts import save_tokenized
from peftpipe.io import atomic_path, read_json
from peftpipe.models import load_tokenizer, resolve_model
from peftpipe.provenance import write_metrics
from peftpipe.stage import stage
from peftpipe.tasks import get_task


@stage(reads=("split",), writes=("tokenized", "report"))
def main(params, split, tokenized, report):
    """Tokenize every split (NER: tags aligned per tokenize.label_all_tokens)."""
    task = get_task(params.task.kind)
    labels = read_json(split / "labels.json")
    tokenizer = load_tokenizer(resolve_model(params.model), params.model.revision)
    datasets = {
        name: task.tokenize(pd.read_parquet(split / f"{name}.parquet"), tokenizer, labels, params)
        for name in ("train", "validation", "test")
    }
    with atomic_path(tokenized, directory=True) as tmp:
        save_tokenized(datasets, labels, tmp)
    cut = {name: task.truncation(dataset) for name, dataset in datasets.items()}
    write_metrics(report, cut)  # every task measures it: the stage writes each output it declares
    for name, counts in cut.items():
        if counts["rows_cut"]:
            lost = {k: v for k, v in counts.items() if k.endswith("_cut") and k != "rows_cut"}
            print(f"tokenize: warning: {name}: {counts['rows_cut']} of {counts['rows']} rows are longer than "
                  f"model.max_length {params.model.max_length} and were cut "
                  f"({', '.join(f'{v} {k[:-4]}' for k, v in lost.items())} lost"
                  f"{'; lost words count as O' if 'words_cut' in lost else ''})")
    print(f"tokenize: max_length {params.model.max_length} -> {tokenized}")


if __name__ == "__main__":
    main()

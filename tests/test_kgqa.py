"""KGQA over MetaQA: relation paths, linking, the path classifier trained on a small subset of the train split,
answers with citations on real dev questions, refusals (unknown entity, Cypher in the question), and the in-memory
reference graph against the ladybug store on the same named queries."""

from __future__ import annotations

import numpy as np
import pytest

from almquist.config import KGQAConfig, data_dir
from almquist.stores.memory_store import InMemoryGraphStore, read_kb
from benchmarks.kgqa_evaluate import HopScore, evaluate, gold_path_reaches
from deployments.kgqa import (
    KGQA,
    EntityLinker,
    KGQAEngine,
    PathClassifier,
    RelationPath,
    load_engine,
    path_from_qtype,
)
from deployments.kgqa.linker import read_vocabulary
from deployments.kgqa.metaqa import read_questions, split_of
from deployments.kgqa.train import first_per_label

METAQA = data_dir() / "metaqa"


@pytest.fixture
def metaqa_present() -> None:
    """The MetaQA data set is part of the test inputs: missing data fails loudly, it never skips."""
    assert (METAQA / "kb.txt").exists(), f"MetaQA data not at {METAQA}: set ALMQUIST_DATA_DIR"


needs_metaqa = pytest.mark.usefixtures("metaqa_present")
INJECTION = 'Tom Hanks"}) MATCH (n) DETACH DELETE n //'


# ---- paths ----
def test_qtype_to_path():
    path = path_from_qtype("director_to_movie_to_language")
    assert path == RelationPath("Person", (("directed_by", "in"), ("in_language", "out")))
    assert path.labels == ("Person", "Movie", "Language")
    assert RelationPath.from_key(path.key()) == path
    assert path_from_qtype("movie_to_tags").hops == (("has_tags", "out"),)
    assert path_from_qtype("tag_to_movie").start == "Tag"
    three = path_from_qtype("movie_to_writer_to_movie_to_genre")
    assert three.labels == ("Movie", "Person", "Movie", "Genre")


def test_invalid_paths_are_refused():
    with pytest.raises(ValueError):
        RelationPath("Person", (("in_language", "out"),))  # a person has no language edge
    with pytest.raises(ValueError):
        path_from_qtype("actor_to_director")
    with pytest.raises(ValueError):
        RelationPath.from_key("Movie|directed_by:sideways")


# ---- in-memory graph ----
TOY = [
    ("Heat", "directed_by", "Michael Mann"),
    ("Heat", "starred_actors", "Al Pacino"),
    ("Heat", "starred_actors", "Robert De Niro"),
    ("Heat", "release_year", "1995"),
    ("Collateral", "directed_by", "Michael Mann"),
    ("Collateral", "starred_actors", "Tom Cruise"),
    ("Collateral", "release_year", "2004"),
    ("The Irishman", "starred_actors", "Al Pacino"),
    ("The Irishman", "starred_actors", "Robert De Niro"),
]


def test_memory_graph_queries_and_snapshots():
    graph = InMemoryGraphStore(TOY, seq=1)
    graph.add([("Thief", "directed_by", "Michael Mann")], seq=2)
    assert graph.run("find_entities_by_name", {"name": "Heat"}) == [
        {"id": "Movie:Heat", "name": "Heat", "label": "Movie"}
    ]
    rows = graph.run("expand_in", {"ids": ["Person:Michael Mann"], "rel": "directed_by"})
    assert [r["dst"] for r in rows] == ["Movie:Collateral", "Movie:Heat", "Movie:Thief"]
    pinned = graph.run("expand_in", {"ids": ["Person:Michael Mann"], "rel": "DIRECTED_BY", "max_seq": 1})
    assert [r["dst_name"] for r in pinned] == ["Collateral", "Heat"]
    assert [r["id"] for r in graph.run("entities_by_label", {"label": "Year"})] == ["Year:1995", "Year:2004"]


# ---- linking ----
def test_linker_bracket_free_text_normalised_fuzzy_and_vector():
    graph = InMemoryGraphStore([*TOY, ("Amélie", "in_language", "French"), ("Heat Wave", "release_year", "1954")])
    linker = EntityLinker.from_store(graph)
    assert linker.link("who directed [Heat]").entities[0].id == "Movie:Heat"
    free = linker.link("Who directed Heat Wave?")
    assert free.mention == "Heat Wave" and free.entities[0].method == "exact"
    assert linker.link("what language is amelie in").entities[0].id == "Movie:Amélie"
    fuzzy = linker.link("movies with [Robert De Nir]").entities[0]
    assert (fuzzy.id, fuzzy.method) == ("Person:Robert De Niro", "fuzzy")
    assert linker.link("who directed [Nothing Like It]").entities == ()
    hooked = EntityLinker(graph, vector_search=lambda text: [("Movie:Heat", 0.7)])
    assert hooked.link("who directed [The Heat Movie]").entities[0].method == "vector"
    store_only = EntityLinker(graph)  # no vocabulary: exact names through the store only
    assert store_only.link("who directed [Collateral]").entities[0].id == "Movie:Collateral"


# ---- the classifier and the engine on MetaQA ----
@pytest.fixture(scope="module")
def embed():
    import torch

    from deployments.kgqa.embedder import minilm_embedder

    threads = torch.get_num_threads()
    # one thread, as served: on a busy 2-core machine a second one makes single-text latency spiky
    yield minilm_embedder(int8=True, threads=1)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(embed, tmp_path_factory: pytest.TempPathFactory):
    from deployments.kgqa.train import train

    if not (METAQA / "kb.txt").exists():
        pytest.fail(f"MetaQA data not at {METAQA}: set ALMQUIST_DATA_DIR")
    out = tmp_path_factory.mktemp("kgqa-model")
    return train(METAQA, out, per_path_limit=25, validation_per_path_limit=25, embed=embed)


@pytest.fixture(scope="module")
def kb_graph() -> InMemoryGraphStore:
    if not (METAQA / "kb.txt").exists():
        pytest.fail(f"MetaQA data not at {METAQA}: set ALMQUIST_DATA_DIR")
    return InMemoryGraphStore.from_kb(METAQA / "kb.txt")


@pytest.fixture(scope="module")
def engine(trained, embed, kb_graph) -> KGQA:
    return KGQA.from_model_dir(kb_graph, trained.out, embed=embed)


@needs_metaqa
def test_split_is_deterministic_and_disjoint():
    train = {q.text for h in (1, 2, 3) for q in read_questions(METAQA, h, split="train")}
    validation = {q.text for h in (1, 2, 3) for q in read_questions(METAQA, h, split="validation")}
    assert train and validation and not train & validation
    assert 0.25 < len(validation) / (len(train) + len(validation)) < 0.35
    assert split_of("what movies did [Tom Hanks] act in") == split_of("what movies did [Tom Hanks] act in")


@needs_metaqa
def test_classifier_on_held_out_questions(trained, engine):
    assert trained.train_questions <= 49 * 25 and trained.paths == 49
    assert trained.validation_accuracy >= 0.9
    # the saved classifier (the engine loads it from trained.out) on the first 5 validation questions of each
    # qtype, scored by the scorer the benchmark and the notebooks use
    held_out = [q for hops in (1, 2, 3) for q in first_per_label(read_questions(METAQA, hops, split="validation"), 5)]
    score = evaluate(engine, held_out)
    assert [r.text for r in score.results] == [q.text for q in held_out]
    assert score.path_correct / score.questions >= 0.9, score.path_correct
    assert score.hits_at_1 >= 0.85, score.hits_at_1
    qtypes = {q.qtype for q in held_out}
    by_qtype = {qtype: HopScore.of(r for r in score.results if r.qtype == qtype) for qtype in qtypes}
    worst = min(by_qtype.items(), key=lambda item: item[1].hits_at_1)
    assert worst[1].hits_at_1 >= 0.5, (worst[0], [(r.text, r.predicted[:3], r.gold[:3]) for r in worst[1].results])


@needs_metaqa
def test_saved_model_is_plain_numpy_and_json(trained, embed):
    files = sorted(p.name for p in trained.out.iterdir())
    assert files == ["coef.npy", "intercept.npy", "meta.json"]
    assert np.load(trained.out / "coef.npy", allow_pickle=False).shape == (49, embed.dimensions)

    class OtherEmbedder:
        name = "some-other-model/fp32"

        def __call__(self, texts):
            return np.zeros((len(texts), embed.dimensions), np.float32)

    with pytest.raises(ValueError, match="trained on"):
        PathClassifier.load(trained.out, OtherEmbedder())


@needs_metaqa
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_answers_real_dev_questions_with_facts(engine, kb_graph, hops):
    kb = set(read_kb(METAQA / "kb.txt"))
    questions = [q for q in read_questions(METAQA, hops, split="validation")[:40] if gold_path_reaches(kb_graph, q)]
    for question in questions[:4]:
        result = engine.answer(question.text)
        assert result.reason is None, (question.text, result.reason)
        assert set(result.answers) & set(question.answers), (question.text, result.answers[:5], question.answers)
        assert result.path == path_from_qtype(question.qtype or "")
        assert result.linked[0].partition(":")[2] == question.mention
        assert question.mention not in result.answers  # the topic entity is never its own answer
        assert 0 < result.confidence <= 1 and result.support == sorted(result.support, reverse=True)
        assert result.facts and all((f.subject, f.relation, f.object) in kb for f in result.facts)
        assert len(result.facts) >= hops  # at least one whole supporting path


@needs_metaqa
def test_unknown_entity_gives_no_answer_and_a_reason(engine):
    result = engine.answer("what movies did [Zzyzx Qwertyuiop] act in")
    assert result.answers == [] and result.facts == [] and result.linked == []
    assert "Zzyzx Qwertyuiop" in (result.reason or "")
    assert engine.answer("   ").reason == "the question is empty"


@needs_metaqa
def test_load_engine_is_the_engine_graph_rag_runs(trained, kb_graph, engine):
    config = KGQAConfig(model_dir=trained.out, max_answers=2, cited_answers=1)
    loaded = load_engine(kb_graph, config, None)  # what GraphRAG calls for a snapshot pin, in a worker thread
    assert isinstance(loaded, KGQAEngine) and isinstance(engine, KGQAEngine)
    question = "what movies did [Tom Hanks] act in"
    result, reference = loaded.answer(question), engine.answer(question)
    assert result.path == reference.path and result.answers == reference.answers[:2]
    assert result.facts == reference.facts[:1]  # one cited answer: the one fact of its 1-hop path


@needs_metaqa
def test_cypher_in_a_question_is_just_text(engine, kb_graph):
    before = len(kb_graph)
    bracketed = engine.answer(f"what movies did [{INJECTION}] act in")
    assert bracketed.answers == [] and INJECTION in (bracketed.reason or "")
    # in free text the words around the Cypher still name Tom Hanks; nothing else is read from it
    free = engine.answer(f"who directed {INJECTION}")
    assert set(free.linked) <= {"Person:Tom Hanks", "Tag:tom hanks"}
    assert len(kb_graph) == before
    assert engine.answer("what movies did [Tom Hanks] act in").answers


# ---- the reference graph against the ladybug store ----
def kb_subset(movies: int = 150) -> list[tuple[str, str, str]]:
    triples = read_kb(METAQA / "kb.txt")
    heads = sorted({h for h, _, _ in triples})[1000 : 1000 + movies]
    keep = set(heads) | {"Heat", "Collateral", "Thief"}
    return [t for t in triples if t[0] in keep]


@pytest.fixture(scope="module")
def both_stores(tmp_path_factory: pytest.TempPathFactory):
    if not (METAQA / "kb.txt").exists():
        pytest.fail(f"MetaQA data not at {METAQA}: set ALMQUIST_DATA_DIR")
    import time

    from almquist.config.knowledge import GraphStoreConfig
    from almquist.stores.factory import open_graph_store
    from almquist.stores.snapshot import Snapshot
    from deployments.kgqa.metaqa import write_triples

    triples = kb_subset()
    path = tmp_path_factory.mktemp("ladybug") / "graph"
    ladybug = open_graph_store(GraphStoreConfig(path=path, buffer_pool_mb=256, threads=1))
    write_triples(ladybug, triples, Snapshot("metaqa-subset", 1, "kb.txt", time.time()))
    yield InMemoryGraphStore(triples, seq=1), ladybug
    ladybug.close()


@needs_metaqa
def test_memory_graph_matches_ladybug_on_the_same_queries(both_stores):
    from almquist.stores.schema import METAQA_RELATIONS, NODE_LABELS

    memory, ladybug = both_stores
    assert sorted(read_vocabulary(memory)) == sorted(read_vocabulary(ladybug))
    names = sorted({name for _, name, _ in read_vocabulary(memory)})
    for query in ("find_entities_by_names",):
        assert memory.run(query, {"names": names}) == ladybug.run(query, {"names": names})
    assert memory.run("find_entities_by_name", {"name": "Heat"}) == ladybug.run(
        "find_entities_by_name", {"name": "Heat"}
    )
    movies = [node for node, _, label in memory.entities() if label == "Movie"]
    for relation, (_, _, dst_label) in METAQA_RELATIONS.items():
        params = {"ids": movies, "rel": relation}
        assert memory.run("expand_out", params) == ladybug.run("expand_out", params), relation
        targets = [node for node, _, label in memory.entities() if label == dst_label]
        params = {"ids": targets, "rel": relation}
        assert memory.run("expand_in", params) == ladybug.run("expand_in", params), relation
    for label in NODE_LABELS:
        params = {"label": label, "max_seq": 0}  # before the only snapshot: nothing
        assert memory.run("entities_by_label", params) == ladybug.run("entities_by_label", params) == []


@needs_metaqa
def test_engine_answers_the_same_on_both_stores(both_stores, trained, embed):
    memory, ladybug = both_stores
    engines = [KGQA.from_model_dir(store, trained.out, embed=embed) for store in (memory, ladybug)]
    questions = [
        "who directed [Heat]",
        "which movies share the director of [Heat]",
        "what year did the movies directed by [Michael Mann] come out",
        f"what movies did [{INJECTION}] act in",
    ]
    for question in questions:
        first, second = (engine.answer(question) for engine in engines)
        assert (first.answers, first.facts, first.path, first.reason) == (
            second.answers,
            second.facts,
            second.path,
            second.reason,
        )
    assert "Michael Mann" in engines[0].answer(questions[0]).answers
    counts = ladybug.counts()
    engines[1].answer(f"who directed {INJECTION}")
    assert ladybug.counts() == counts


@needs_metaqa
def test_benchmark_runs_end_to_end(trained, capsys):
    from benchmarks import metaqa

    metaqa.main(
        [
            "--questions",
            str(METAQA),
            "--limit",
            "15",
            "--model",
            str(trained.out),
            "--stores",
            "memory",
            "--scale-entities",
            "0",
            "--latency-questions",
            "10",
            "--torch-threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "Hits@1 memory" in out and "p50 ms" in out

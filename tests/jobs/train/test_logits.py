"""The logits job on the embedded cluster: SmolLM2-135M scores 16 labelled rows teacher-forced (Ray Data).

Checks the shard format, that the stored top-k are the teacher's own full-softmax log-probs at the
positions predicting each response token, the rejects, the storage figures, and that a re-run
reuses the shards it finds.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from trainer_fixtures import LOGITS_ROWS, TEACHER, extracted_logits, stage


@pytest.fixture(scope="module")
def logits_run(tmp_path_factory, ray_cluster):
    return extracted_logits(tmp_path_factory, ray_cluster)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_logits_rejects_and_reports_storage(logits_run):
    result = logits_run["result"]
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (LOGITS_ROWS + 2, LOGITS_ROWS, 2)
    assert result.rejected_reasons == {"empty problem": 1, "duplicate sample_id (its logits are stored once)": 1}
    m = result.metrics
    assert m["rows"] == LOGITS_ROWS and m["rows_extracted"] == LOGITS_ROWS and m["response_tokens"] > 10 * LOGITS_ROWS
    assert m["raw_bytes_per_token"] == 8 * (4 + 2) + 4  # top_k = 8, int32 ids, float16 log-probs
    assert 0 < m["bytes_per_token"] < 4 * m["raw_bytes_per_token"]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_stored_topk_are_the_teachers_logprobs(logits_run):
    import pyarrow as pa

    from distill_ray.models.loading import load_causal_lm, load_tokenizer, resolve_model
    from distill_ray.training.kd_data import read_manifest, teacher_forced_ids

    table = pq.read_table(logits_run["folder"])
    assert table.schema.field("topk_logprobs").type == pa.list_(pa.float16())
    assert table.schema.field("topk_ids").type == pa.list_(pa.int32())
    assert sorted(table.column("sample_id").to_pylist()) == sorted(r["sample_id"] for r in logits_run["rows"])
    manifest = read_manifest(logits_run["folder"])
    assert manifest["top_k"] == 8 and manifest["teacher"] == TEACHER and manifest["rows"] == LOGITS_ROWS
    path = resolve_model(TEACHER)
    tokenizer, teacher = load_tokenizer(path), load_causal_lm(path).eval()
    by_key = {r["sample_id"]: r for r in logits_run["rows"]}
    for stored in table.slice(0, 3).to_pylist():
        row = by_key[stored["sample_id"]]
        prompt, response = teacher_forced_ids(tokenizer, row["problem"], row["response"], "", "{problem}", 128)
        assert (stored["prompt_ids"], stored["response_ids"]) == (prompt, response)
        with torch.no_grad():
            logprobs = torch.log_softmax(teacher(input_ids=torch.tensor([prompt + response])).logits[0].float(), -1)
        # Response token j is predicted at position len(prompt) - 1 + j.
        expected = logprobs[len(prompt) - 1 : len(prompt) - 1 + len(response)]
        ids = torch.tensor(stored["topk_ids"]).view(len(response), 8).long()
        values = torch.tensor(stored["topk_logprobs"], dtype=torch.float32).view(len(response), 8)
        assert torch.equal(ids[:, 0], expected.argmax(-1))
        assert torch.allclose(values, expected.gather(-1, ids), atol=3e-2)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_logits_rerun_reuses_shards(logits_run, ray_cluster):
    from jobs.train import logits

    root = logits_run["root"]
    again = logits.run(logits_run["config"], stage("logits", root, ray_cluster))
    assert again.metrics["rows_extracted"] == 0 and again.metrics["rows_reused"] == LOGITS_ROWS
    assert again.metrics["response_tokens"] == logits_run["result"].metrics["response_tokens"]

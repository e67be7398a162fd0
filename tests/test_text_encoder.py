import pytest
import torch

from refers_lite.models.text_encoder import TextEncoder, load_text_tokenizer


def test_offline_minilm_tokenizer_round_trips(text_tokenizer):
    assert text_tokenizer.vocab_size == 30522  # not the 5-token vocabulary of the vocab_file trap
    text = "small left pleural effusion. no pneumothorax."
    ids = text_tokenizer(text)["input_ids"]
    assert text_tokenizer.unk_token_id not in ids
    assert text_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_offline_minilm_encoder_is_pretrained_and_projects_to_the_joint_space(text_tokenizer):
    enc = TextEncoder("minilm", out_dim=48).eval()
    assert enc.backbone.config.hidden_size == 384 and len(enc._layers()) == 6
    batch = text_tokenizer(["the heart is enlarged.", "the heart size is normal.", "left apical pneumothorax."],
                           padding=True, return_tensors="pt")
    with torch.no_grad():
        t = enc(batch["input_ids"], batch["attention_mask"])
    assert t.shape == (3, 48)
    # pre-trained: the pooled sentence embeddings of related sentences are closer than unrelated ones
    with torch.no_grad():
        h = enc.backbone(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1)
    pooled = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    sim = pooled @ pooled.t()
    assert sim[0, 1] > sim[0, 2]


def test_mean_pooling_ignores_padding(text_tokenizer):
    enc = TextEncoder("random", out_dim=8, random_width=16, random_depth=1).eval()
    one = text_tokenizer(["no effusion."], return_tensors="pt")
    padded = text_tokenizer(["no effusion.", "a much longer report with many more words in it."],
                            padding=True, return_tensors="pt")
    with torch.no_grad():
        a = enc(one["input_ids"], one["attention_mask"])
        b = enc(padded["input_ids"], padded["attention_mask"])[:1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_freezing_the_first_k_layers(text_tokenizer):
    enc = TextEncoder("random", out_dim=8, random_width=16, random_depth=2, freeze_layers=1)
    layers = enc._layers()
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert not any(p.requires_grad for p in enc.backbone.embeddings.parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert all(p.requires_grad for p in enc.proj.parameters())
    batch = text_tokenizer(["the lungs are clear."], return_tensors="pt")
    enc(batch["input_ids"], batch["attention_mask"]).sum().backward()
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[1].parameters())
    enc.freeze_layers(0)
    assert all(p.requires_grad for p in enc.parameters())
    with pytest.raises(ValueError, match="cannot freeze 3 layers"):
        enc.freeze_layers(3)


def test_unknown_model_gives_a_clear_error():
    with pytest.raises(OSError, match="could not load the text encoder.*Offline"):
        TextEncoder("/nonexistent/bert-folder", out_dim=8)
    with pytest.raises(OSError, match="could not load the text tokenizer"):
        load_text_tokenizer("/nonexistent/bert-folder")

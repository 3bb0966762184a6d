"""The lean decoder's loop: ``LeanDecoder`` runs a Llama/Qwen3 model's layers over a preallocated KV cache.

``generate`` runs each distinct prompt once, copies its cache to the rows sharing it, then decodes
one token per step for the rows still running (stopped rows leave the batch down to ``MIN_ROWS``);
``final_hidden`` gives the training step's full-sequence pass the same saving on the prompt
(``shared_prefix_length``). The package docstring (``arca.decode``) says why this equals ``generate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arca.decode.layers import (
    Block,
    additive,
    attend,
    feed_forward,
    keys_values,
    merged,
    projection,
    queries_keys_values,
    rms_norm,
    rotary_tables,
    stacked,
    unsupported,
)
from arca.decode.sampling import check_logits, next_tokens, process_scores
from arca.sampling import Sampling

SUPPORTED_MODEL_TYPES = ("llama", "qwen3")

# Generation-config fields that would make ``generate`` add a logits processor we do not apply,
# with the value that means "off".
_OFF_PROCESSORS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "min_length": 0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "guidance_scale": None,
    "exponential_decay_length_penalty": None,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "watermarking_config": None,
}


# ----------------------------------------------------------------------------- the decoder
class LeanDecoder:
    """Batched decoding of a (peft-wrapped) Llama/Qwen3 causal LM, equal to its ``generate``."""

    def __init__(self, model):
        self.model = model
        # the transformers causal LM, inside a peft wrapper or not
        self.lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = getattr(self.lm, "config", None)
        if getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES:
            raise unsupported(
                f"model type {getattr(cfg, 'model_type', type(self.lm).__name__)!r}, "
                f"supported: {list(SUPPORTED_MODEL_TYPES)}"
            )
        if getattr(cfg, "_attn_implementation", None) != "sdpa":
            raise unsupported(f"attention implementation {getattr(cfg, '_attn_implementation', None)!r}, needs 'sdpa'")
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
            raise unsupported("sliding-window layers")
        gen_cfg = getattr(self.lm, "generation_config", None)
        for key, off in _OFF_PROCESSORS.items():
            value = getattr(gen_cfg, key, off)
            if value is not None and value != off:
                raise unsupported(f"generation_config.{key} = {value!r} adds a logits processor")
        self.eps = cfg.rms_norm_eps
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

    def blocks(self, merge: bool = False) -> list[Block]:
        """Every layer's weights as they compute now; ``merge``: LoRA folded into the weights (``merged``)."""
        fold = merged if merge else (lambda p: p)
        out = []
        for layer in self.lm.model.layers:
            at, mlp = layer.self_attn, layer.mlp
            qk_norm = None
            if getattr(at, "q_norm", None) is not None:
                qk_norm = torch.cat([at.q_norm.weight.expand(self.n_heads, -1), at.k_norm.weight.expand(self.n_kv, -1)])
            out.append(
                Block(
                    at,
                    layer.input_layernorm.weight,
                    layer.post_attention_layernorm.weight,
                    fold(projection(at.q_proj)),
                    fold(projection(at.k_proj)),
                    fold(projection(at.v_proj)),
                    fold(projection(at.o_proj)),
                    qk_norm,
                    fold(projection(mlp.gate_proj)),
                    fold(projection(mlp.up_proj)),
                    fold(projection(mlp.down_proj)),
                    mlp.act_fn,
                )
            )
            if merge:  # sampling: also the projections of one input as one matmul
                blk = out[-1]
                blk.qkv, blk.gate_up = stacked(blk.q, blk.k, blk.v), stacked(blk.gate, blk.up)
        return out

    def _hidden(
        self,
        blocks: list[Block],
        ids: torch.Tensor,
        pos: torch.Tensor,
        start: int,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor | None,
        kv_end: int | None = None,
        kv_only: bool = False,
    ) -> torch.Tensor | None:
        """Final hidden states [B, S, H] (after the last norm) of tokens ``ids`` [B, S] at positions ``pos``.

        Their keys and values go into ``cache`` at start..start+S-1, and they attend over the first
        ``kv_end`` (default start+S) entries; ``mask`` is the [B, 1, S, kv_end] additive mask (0 or
        -inf, see ``additive``) or None (causal, no padding). ``kv_only``: only the cache is wanted,
        so the last layer computes its keys and values and nothing else (its queries, attention,
        output projection and MLP would feed nothing), and None is returned.
        """
        lm = self.lm
        h = lm.model.embed_tokens(ids)  # [B, S, H]
        cos, sin = rotary_tables(*lm.model.rotary_emb(h, pos))  # [B, S, 1, D] each
        B, S = ids.shape
        end = start + S
        kv_end = end if kv_end is None else kv_end
        shape = (self.n_heads, self.head_dim, self.eps)
        for i, (blk, (kc, vc)) in enumerate(zip(blocks, cache)):
            x = rms_norm(h, blk.ln1, self.eps)
            if kv_only and i == len(blocks) - 1:
                k, v = keys_values(blk, x, cos, sin, *shape)  # [B, S, kv_heads, D] each
                kc[:, :, start:end], vc[:, :, start:end] = k.transpose(1, 2), v.transpose(1, 2)
                return None
            q, k, v = queries_keys_values(blk, x, cos, sin, *shape)  # [B, S, heads or kv_heads, D]
            kc[:, :, start:end], vc[:, :, start:end] = k.transpose(1, 2), v.transpose(1, 2)
            a = attend(blk, q, kc[:, :, :kv_end], vc[:, :, :kv_end], mask)  # [B, S, heads, D]
            h = h + blk.o(a.reshape(B, S, -1))
            h = h + feed_forward(blk, rms_norm(h, blk.ln2, self.eps))
        return rms_norm(h, lm.model.norm.weight, self.eps)  # [B, S, H]

    def _forward(
        self,
        blocks: list[Block],
        ids: torch.Tensor,
        pos: torch.Tensor,
        start: int,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``_hidden``, then the logits of the last position [B, V] in fp32 (generate()'s ``logits_to_keep=1``)."""
        h = self._hidden(blocks, ids, pos, start, cache, mask)
        head = self.lm.lm_head
        return F.linear(h[:, -1:, :], head.weight, head.bias)[:, -1].to(torch.float32)  # [B, V]

    def _cache(
        self, rows: int, length: int, like: torch.Tensor, n_blocks: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [tuple(like.new_zeros(rows, self.n_kv, length, self.head_dim) for _ in "kv") for _ in range(n_blocks)]

    def final_hidden(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        exact: bool = True,
    ) -> torch.Tensor | None:
        """Final hidden states [B, T, H] predicting y_1..y_T, the first Q0 <= P-1 positions once per distinct prompt.

        As the full pass (``arca.scoring._final_hidden``: prompt + completion [B, S = P+T-1], mask
        (prompt mask, completion mask), positions cumsum(mask) - 1), with the shared keys and values
        copied to the rows sharing them. ``exact`` (the reference pass of ``share_prompt: false``):
        bit for bit the full pass on CPU; the first pass attends over all S slots (the later ones
        masked) and Q0 is a multiple of PyTorch's CPU flash-attention query block for S queries, so
        every query gets the same blocks and rounding; None where that cannot be arranged (GPU, no
        masked slot, a single query) and the caller runs the full pass. ``exact=False`` (either
        pass of ``share_prompt``, differentiable): Q0 = P-1 over its own slots, equal up to rounding,
        with one LoRA-dropout draw per distinct prompt's positions shared by its rows.
        """
        P, T = prompt_ids.shape[1], completion_ids.shape[1]
        S = P + T - 1
        am = torch.cat([prompt_mask.float(), completion_mask.float()], dim=1)[:, :-1].long()  # [B, S]
        if exact:
            q0 = shared_prefix_length(P, S)
            if prompt_ids.device.type != "cpu" or q0 == 0 or bool((am == 1).all()):
                return None
        else:
            q0 = P - 1
            if q0 == 0:
                return None
        kv0 = S if exact else q0  # key slots the shared pass attends over
        ids = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]  # [B, S]
        pos = (am.cumsum(dim=1) - 1).clamp(min=0)  # [B, S]
        blocks = self.blocks()
        dtype = self.lm.model.embed_tokens.weight.dtype
        causal = torch.ones(S, S, dtype=torch.bool, device=ids.device).tril()  # [S, S]
        uniq, inverse = torch.unique(
            torch.cat([ids[:, :q0], am[:, :q0]], dim=1), dim=0, return_inverse=True
        )  # [U, 2 q0]
        u_am = torch.cat([uniq[:, q0:].bool(), am.new_zeros(len(uniq), S - q0, dtype=torch.bool)], dim=1)  # [U, S]
        u_pos = (uniq[:, q0:].cumsum(dim=1) - 1).clamp(min=0)  # [U, q0]
        cache = self._cache(len(uniq), S, self.lm.model.embed_tokens.weight, len(blocks))
        self._hidden(
            blocks,
            uniq[:, :q0],
            u_pos,
            0,
            cache,
            additive(causal[None, None, :q0, :kv0] & u_am[:, None, None, :kv0], dtype),  # [U, 1, q0, kv0]
            kv_end=kv0,
            kv_only=True,
        )  # fills the shared keys and values of positions 0..q0-1
        cache = [(kc[inverse], vc[inverse]) for kc, vc in cache]
        mask = additive(causal[None, None, q0:] & am.bool()[:, None, None], dtype)  # [B, 1, S-q0, S]
        h = self._hidden(blocks, ids[:, q0:], pos[:, q0:], q0, cache, mask)  # [B, S-q0, H]
        return h[:, P - 1 - q0 :]  # [B, T, H]

    def _prefill(
        self, blocks: list[Block], ids: torch.Tensor, am: torch.Tensor, max_new_tokens: int, padded: bool
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """The prompts' pass for ``generate``: ``(logits [B, V], cache, pos [B, 1], full_mask [B, L])``.

        ``cache`` holds the prompts' keys and values with room for ``max_new_tokens`` more (L = P +
        max_new_tokens slots), ``pos`` is each row's last prompt position and ``full_mask`` the
        additive mask over all L slots. ``padded`` False: no mask (causal SDPA, as generate()).
        """
        B, P = ids.shape
        device = ids.device
        # the prompt runs once per distinct (ids, mask) row; its cache is then copied to every row sharing it
        uniq, inverse = torch.unique(torch.cat([ids, am], dim=1), dim=0, return_inverse=True)  # [U, 2P], [B]
        if len(uniq) == B:  # nothing shared: keep the batch as it is
            uniq, inverse = torch.cat([ids, am], dim=1), None
        u_ids, u_am = uniq[:, :P], uniq[:, P:]  # [U, P]
        pos0 = (u_am.long().cumsum(-1) - 1).masked_fill(u_am == 0, 0)  # [U, P]
        dtype = self.lm.model.embed_tokens.weight.dtype
        mask = None
        if padded:
            causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()  # [P, P]
            mask = additive(causal[None, None] & u_am.bool()[:, None, None, :], dtype)  # [U, 1, P, P]
        L = P + max_new_tokens
        cache = self._cache(len(uniq), L, self.lm.model.embed_tokens.weight, len(blocks))
        logits = self._forward(blocks, u_ids, pos0, 0, cache, mask)  # [U, V]
        if inverse is not None:
            logits, pos0 = logits[inverse], pos0[inverse]  # [B, V], [B, P]
            cache = [(kc[inverse], vc[inverse]) for kc, vc in cache]
        full_mask = additive(
            torch.cat([am.bool(), am.new_ones(B, max_new_tokens, dtype=torch.bool)], 1), dtype
        )  # [B, L]
        return logits, cache, pos0[:, -1:], full_mask

    @torch.no_grad()
    def generate(
        self, ids: torch.Tensor, am: torch.Tensor, eos_ids: list[int], pad_id: int, s: Sampling
    ) -> torch.Tensor:
        """Completions [B, T] (T <= s.max_new_tokens) of left-padded prompts ``ids`` / ``am`` [B, P].

        Row b holds its tokens up to and including its first EOS, then ``pad_id``; T is the step at
        which the last row stopped. The rows are already repeated ``s.n`` times and the global RNG
        already seeded (``s.seed``) by the caller. The model must be in eval mode.
        """
        max_new_tokens = s.max_new_tokens
        B, P = ids.shape
        device = ids.device
        blocks = self.blocks(merge=True)
        padded = not bool((am == 1).all())  # generate() drops an all-ones mask: causal SDPA, no mask
        logits, cache, pos, full_mask = self._prefill(blocks, ids, am, max_new_tokens, padded)
        check_logits(logits, 0)

        eos = torch.tensor(sorted(eos_ids), device=device)
        eos_mask = torch.isin(torch.arange(logits.shape[-1], device=device), eos)  # [V]
        out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)  # [B, max_new]
        unfinished = torch.ones(B, dtype=torch.long, device=device)
        rows = torch.arange(B, device=device)  # the batch rows still run through the model (sorted)
        steps = 0
        while True:
            # every row is sampled, finished ones too (their draws are thrown away), so the RNG
            # advances exactly as in generate()
            scores = process_scores(
                logits, steps, s.greedy, s.temperature, s.top_k, s.top_p, s.min_new_tokens, eos_mask
            )  # [B, V]
            tok = next_tokens(scores, s.greedy) * unfinished + pad_id * (1 - unfinished)  # [B]
            out[:, steps] = tok
            steps += 1
            unfinished = unfinished & ~torch.isin(tok, eos)
            if steps >= max_new_tokens or unfinished.max() == 0:
                break
            if len(rows) > MIN_ROWS and int(unfinished.sum()) <= len(rows) // 2:
                keep = compact_rows(rows, unfinished.nonzero().squeeze(1))  # positions in ``rows`` to keep
                rows, pos, full_mask = rows[keep], pos[keep], full_mask[keep]
                cache = [(kc[keep], vc[keep]) for kc, vc in cache]
            pos = pos + 1
            step_mask = full_mask[:, None, None, : P + steps] if padded else None  # [R, 1, 1, P+steps]
            new = self._forward(blocks, tok[rows, None], pos, P + steps - 1, cache, step_mask)  # [R, V]
            check_logits(new, steps)
            if len(rows) == B:
                logits = new
            else:  # stopped rows keep their last logits: only their (discarded) draws read them
                logits[rows] = new
        return out[:, :steps]


def flash_query_block(n_queries: int) -> int:
    """Query block size of PyTorch's CPU flash attention for ``n_queries`` queries (its dispatch rule)."""
    return 256 if n_queries >= 768 else 64 if n_queries >= 192 else 32


def shared_prefix_length(prompt_len: int, seq_len: int) -> int:
    """Q0: how many leading positions ``final_hidden`` runs once per prompt; 0 = none.

    The full pass cuts its ``seq_len`` queries into blocks of b = ``flash_query_block(seq_len)``.
    Q0 is the largest multiple of b below the prompt's last position for which the first pass (Q0
    queries) and the second (the other seq_len - Q0) cut theirs into the same blocks.
    """
    b = min(flash_query_block(seq_len), seq_len)
    q0 = (prompt_len - 1) // b * b
    while q0 > 0:
        rest = seq_len - q0
        b_rest = min(flash_query_block(rest), rest)  # a whole block of b, or the full pass's (shorter) last one
        if min(flash_query_block(q0), q0) == b and (b_rest == b or b_rest == rest <= b):
            return q0
        q0 -= b
    return 0


# Rows that have stopped are dropped from the model's batch, but it keeps at least this many: MKL
# rounds a GEMM row the same whatever the number of rows from 4 up (not below), and the attention
# treats every row on its own, so the rows still running get exactly generate()'s values.
MIN_ROWS = 8


def compact_rows(rows: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Positions in ``rows`` (sorted batch rows) to keep: every row in ``live``, topped up to MIN_ROWS."""
    is_live = torch.isin(rows, live)  # [R]
    keep = is_live.nonzero().squeeze(1)
    if len(keep) < MIN_ROWS:  # fill with stopped rows so that the batch does not shrink below MIN_ROWS
        keep = torch.cat([keep, (~is_live).nonzero().squeeze(1)[: MIN_ROWS - len(keep)]]).sort().values
    return keep

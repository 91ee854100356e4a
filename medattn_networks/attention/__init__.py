"""Attention modules, created by name: ``create_attention("pam", 3, 32, depth=48)``."""

from medattn_networks.attention.registry import create_attention, get_attention_class, list_attention, register_attention
from medattn_networks.attention.channel import ChannelSE
from medattn_networks.attention.gates import AttentionGate, ProjectExcite
from medattn_networks.attention import self_attention  # noqa: F401  (registers the self-attention family)
from medattn_networks.attention.masag import MultiScaleAdaptiveSpatialAttentionGate
from medattn_networks.attention.memory import MemoryWindowAttention
from medattn_networks.attention.slice import (
    ChannelSliceAttention,
    ProgressiveAttention,
    SliceAttention,
    SliceChannelAttention,
)

__all__ = [
    "create_attention",
    "get_attention_class",
    "list_attention",
    "register_attention",
    "ChannelSE",
    "MemoryWindowAttention",
    "MultiScaleAdaptiveSpatialAttentionGate",
    "AttentionGate",
    "ProjectExcite",
    "SliceAttention",
    "ProgressiveAttention",
    "SliceChannelAttention",
    "ChannelSliceAttention",
]

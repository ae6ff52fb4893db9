"""Builds the configured providers and storage once, at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from processor.providers import BackgroundRemover, ImageGenerator, TextGenerator
from processor.providers.demo import DemoImages, DemoText
from processor.providers.gemini import Gemini
from processor.providers.openai import OpenAIImages, OpenAIText
from processor.providers.removebg import RemoveBg
from processor.providers.storage import LocalStorage, Storage, SupabaseStorage
from processor.settings import ProviderSettings


@dataclass(frozen=True)
class Providers:
    images: ImageGenerator
    text: TextGenerator
    background: BackgroundRemover | None  # None: the local cut-out is used
    storage: Storage


def build(cfg: ProviderSettings, client: httpx.AsyncClient, processor_url: str) -> Providers:
    images: ImageGenerator
    text: TextGenerator
    if cfg.image_provider == "gemini" and cfg.gemini_api_key:
        images = Gemini(
            client, cfg.gemini_base_url, cfg.gemini_api_key.reveal(), cfg.gemini_image_model
        )
    elif cfg.image_provider == "openai" and cfg.openai_api_key:
        images = OpenAIImages(
            client, cfg.openai_base_url, cfg.openai_api_key.reveal(), cfg.openai_image_model
        )
        images.input_fidelity_models = cfg.openai_input_fidelity_models
    else:
        images = DemoImages()
    # A+ copy needs a JSON-schema text model: the configured provider's (OpenAI's Responses
    # API when OpenAI draws the images), else Gemini when there is a key, else the demo writer.
    if cfg.image_provider == "openai" and cfg.openai_api_key:
        text = OpenAIText(
            client, cfg.openai_base_url, cfg.openai_api_key.reveal(), cfg.openai_text_model
        )
    elif cfg.gemini_api_key:
        text = Gemini(
            client, cfg.gemini_base_url, cfg.gemini_api_key.reveal(), cfg.gemini_text_model
        )
    else:
        text = DemoText()
    background = (
        RemoveBg(client, cfg.removebg_base_url, cfg.removebg_api_key.reveal())
        if cfg.removebg_api_key
        else None
    )
    # Every call is timed and recorded in provider_calls (processor.providers.metering).
    from processor.providers.metering import MeteredBackground, MeteredImages, MeteredText

    return Providers(
        MeteredImages(images),
        MeteredText(text),
        MeteredBackground(background) if background is not None else None,
        storage_for(cfg, processor_url),
    )


def storage_for(cfg: ProviderSettings, processor_url: str) -> Storage:
    """Supabase Storage when SUPABASE_URL is set, else the local folder served at /files."""
    if cfg.supabase_url and cfg.supabase_service_role_key:
        return SupabaseStorage(
            cfg.supabase_url,
            cfg.supabase_service_role_key.reveal(),
            cfg.storage_bucket,
            public=cfg.storage_public,
        )
    return LocalStorage(Path(cfg.local_storage_dir).resolve(), processor_url)

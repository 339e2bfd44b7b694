"""The demo's web page (Gradio Blocks) over a :class:`~odise_pl.app.session.DemoSession`.

One event answers the button, the vocabulary box's Enter key and the named API endpoint
``/segment``; its function takes ``image`` (a file path) and ``vocabulary`` (``predict``'s syntax)
first, the rest with defaults, and returns:

1. the annotated image (its legend lists class and score per segment; selecting a segment
   shows its class, score and area below it);
2. the segments as JSON, a list of ``{id, category_name, score, area, is_thing}``;
3. the same as a table; 4. the three files ``odise-pl predict`` writes, to download.

Bad input becomes a message in the page (:class:`gradio.Error`), never a stopped app. Gradio's
telemetry and its update check are off: the page runs with no network.

Example (a trained run; not a doctest)::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    annotated, segments, *_ = client.predict(handle_file("photo.jpg"), "cat,kitten;dog;grass:stuff",
                                             api_name="/segment")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read by gradio when it starts: before the import

import gradio as gr  # noqa: E402  (after the environment above)

from odise_pl.app.session import DemoSession  # noqa: E402
from odise_pl.errors import OdiseError  # noqa: E402

log = logging.getLogger("odise_pl")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: the typed vocabulary of each shipped photo (the classes COCO annotates there, with a synonym or two)
EXAMPLE_VOCABULARIES = {
    "000000142238.jpg": "person,man,woman;sports ball,ball;tree:stuff;grass:stuff;sky:stuff",
    "000000439180.jpg": "person;horse;truck;gravel:stuff;tree:stuff;grass:stuff;sky:stuff",
}
#: the annotated image on the page is at most this many pixels on its long side (the downloads keep the full size)
DISPLAY_LONG_SIDE = 1024
MASK_OPACITY = 0.6
TABLE_HEADERS = ["id", "class", "score", "area (px)", "area (%)", "thing"]


def uploaded_path(payload) -> tuple[str | None, str | None]:
    """The server path and the original file name of an image input that Gradio did not decode.

    The event runs with ``preprocess=False``: Gradio only checks that the file was uploaded, and a file
    that is no image reaches the session, which names the problem in the page (``gr.Image`` would
    fail inside Gradio, before the handler runs).

    Example:
        >>> uploaded_path({"path": "/tmp/gradio/ab/photo.jpg", "orig_name": "photo.jpg"})
        ('/tmp/gradio/ab/photo.jpg', 'photo.jpg')
    """
    if isinstance(payload, dict):
        path = payload.get("path")
        return path, payload.get("orig_name") or (Path(path).name if path else None)
    return (str(payload), Path(payload).name) if payload else (None, None)


def legend_labels(segments: list[dict]) -> list[str]:
    """``"class (score)"`` per segment, unique (a repeat gets ``#id``): the legend's entries.

    Example:
        >>> legend_labels([{"id": 1, "category_name": "dog", "score": 0.912},
        ...                {"id": 2, "category_name": "dog", "score": 0.914}])
        ['dog (0.91)', 'dog (0.91) #2']
    """
    labels, seen = [], set()
    for s in segments:
        label = f"{s['category_name']} ({s['score']:.2f})"
        if label in seen:
            label = f"{label} #{s['id']}"
        seen.add(label)
        labels.append(label)
    return labels


def annotated_image(pred, labels: list[str]) -> tuple:
    """The ``gr.AnnotatedImage`` value: the image and one mask per segment, at most :data:`DISPLAY_LONG_SIDE`
    on the long side (the page colours mask and legend entry alike)."""
    from odise_pl.data_modules.transforms import resize_image, resize_nearest

    image, ids = pred.image, pred.panoptic
    h, w = ids.shape
    scale = min(1.0, DISPLAY_LONG_SIDE / max(h, w))
    if scale < 1.0:
        dh, dw = max(1, round(h * scale)), max(1, round(w * scale))
        image, ids = resize_image(image, dh, dw), resize_nearest(ids, dh, dw)
    # a mask's value is its opacity on the page: the photo shows through
    return image, [((ids == seg["id"]) * MASK_OPACITY, label) for seg, label in zip(pred.segments, labels)]


def describe(segment: dict, total: int) -> str:
    """The Markdown shown when a segment is selected: class, score and area."""
    kind = "thing" if segment["is_thing"] else "stuff"
    return (
        f"**{segment['category_name']}** (segment {segment['id']}, {kind}): score {segment['score']:.3f}, "
        f"area {segment['area']:,} px ({100 * segment['area'] / max(total, 1):.1f}% of the image)"
    )


def build_page(session: DemoSession, *, title: str = "odise-pl") -> gr.Blocks:
    """The Blocks of the demo (not launched: :func:`launch` serves it)."""
    from odise_pl.vocab import builtin_names, default_vocabulary

    classifiers = list(session.classifiers)
    n_default = len(default_vocabulary())

    def segment(
        image: dict | str | None,
        vocabulary: str,
        add_default: bool = False,
        lists: list[str] | None = None,
        classifier: str = session.default_classifier,
        alpha: float = session.default_alpha,
        beta: float = session.default_beta,
    ):
        path, name = uploaded_path(image)
        if not path:
            raise gr.Error("upload an image first (or pick one of the examples).")
        try:
            result = session.segment(
                path,
                vocabulary or "",
                name=name,
                add_default=bool(add_default),
                lists=lists or (),
                classifier=classifier,
                alpha=alpha,
                beta=beta,
            )
        except OdiseError as err:
            raise gr.Error(str(err)) from None  # the message says it all: no traceback in the log
        except Exception as err:  # noqa: BLE001  (the page stays up and says what failed)
            log.exception("odise-pl app: segmentation failed")
            raise gr.Error(f"segmentation failed ({type(err).__name__}: {err}); the app is still running.") from err
        for note in result.notes:
            gr.Warning(note)
        pred = result.prediction
        segments = [{k: s[k] for k in ("id", "category_name", "score", "area", "is_thing")} for s in pred.segments]
        total = int(pred.panoptic.size)
        table = [
            [s["id"], s["category_name"], round(s["score"], 3), s["area"], round(100 * s["area"] / total, 2), s["is_thing"]]
            for s in segments
        ]
        labels = legend_labels(pred.segments)
        summary = (
            f"{len(segments)} segment{'s' * (len(segments) != 1)}, {len(result.class_names):,} classes, "
            f"classifier {classifier}. "
            "Select a segment in the legend or the image for its class, score and area."
        )
        return (
            annotated_image(pred, labels),
            segments,
            table,
            [str(p) for p in result.files],
            {"segments": segments, "total": total},
            summary,
        )

    def select(state: dict | None, evt: gr.SelectData) -> str:
        if not state or evt.index is None or not 0 <= int(evt.index) < len(state["segments"]):
            return ""
        return describe(state["segments"][int(evt.index)], state["total"])

    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(f"## {title}: open-vocabulary panoptic segmentation\nUpload a photo, name the classes to look for, press **Segment**.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="image", sources=["upload", "clipboard"], elem_id="image")
                vocabulary = gr.Textbox(
                    label="vocabulary",
                    placeholder="cat,kitten;dog;grass:stuff",
                    elem_id="vocabulary",
                    info="';' between classes, ',' between synonyms, optional ':thing' / ':stuff'",
                )
                add_default = gr.Checkbox(value=False, label=f"add the default COCO + ADE20K + LVIS vocabulary ({n_default:,} classes)")
                lists = gr.Dropdown(
                    choices=list(builtin_names()),
                    value=[],
                    multiselect=True,
                    label="builtin lists",
                    info="their classes are added to the typed ones",
                )
                with gr.Accordion("classifier", open=False):
                    classifier = gr.Radio(choices=classifiers, value=session.default_classifier, label="classifier")
                    alpha = gr.Slider(
                        0, 1, value=session.default_alpha, step=0.05, label="alpha: CLIP's weight for classes seen in training"
                    )
                    beta = gr.Slider(0, 1, value=session.default_beta, step=0.05, label="beta: CLIP's weight for unseen classes")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                gr.Examples(
                    examples=[[str(EXAMPLES_DIR / name), vocab] for name, vocab in EXAMPLE_VOCABULARIES.items()], inputs=[image, vocabulary]
                )
            with gr.Column(scale=2):
                annotated = gr.AnnotatedImage(label="segments", show_legend=True, elem_id="annotated")
                summary = gr.Markdown(elem_id="summary")
                selected = gr.Markdown(elem_id="selected")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="segments", interactive=False)
                downloads = gr.File(file_count="multiple", label="downloads: panoptic PNG, JSON, overlay")
                segments_json = gr.JSON(label="segments (JSON)", open=False)
        state = gr.State()
        gr.on(
            triggers=[button.click, vocabulary.submit],
            fn=segment,
            inputs=[image, vocabulary, add_default, lists, classifier, alpha, beta],
            outputs=[annotated, segments_json, table, downloads, state, summary],
            api_name="segment",
            concurrency_limit=1,
            preprocess=False,
        )  # see uploaded_path
        annotated.select(select, inputs=[state], outputs=[selected], api_visibility="private")
    return page


def launch(
    session: DemoSession, *, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, title: str = "odise-pl"
) -> gr.Blocks:
    """Serve the page (``block`` False: return at once, the server runs in a thread; ``page.close()`` stops it)."""
    page = build_page(session, title=title)
    page.queue(max_size=32)
    page.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=True,
        quiet=not block,
        prevent_thread_lock=not block,
        allowed_paths=[str(EXAMPLES_DIR), str(session.out_dir)],
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
    )
    return page


__all__ = ["build_page", "launch", "legend_labels", "uploaded_path"]

"""Pictures for people: labelled side-by-side grids of generated images."""

from __future__ import annotations


def compare_grid(columns: dict[str, list], prompts: list[str], *, min_tile: int = 128):
    """One row per prompt, one labelled column per variant (e.g. dense | pruned | POA)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    labels = list(columns)
    first = columns[labels[0]][0]
    w, h = first.size
    scale = max(1, -(-min_tile // w))
    tw, th = w * scale, h * scale
    font = ImageFont.load_default()
    pad, header, caption = 4, 18, 28
    grid = Image.new(
        "RGB",
        (len(labels) * (tw + pad) + pad, header + len(prompts) * (th + caption + pad)),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        draw.text((pad + c * (tw + pad), 3), label, fill="black", font=font)
    for r, prompt in enumerate(prompts):
        y = header + r * (th + caption + pad)
        for c, label in enumerate(labels):
            tile = columns[label][r].convert("RGB").resize((tw, th), Image.NEAREST)
            grid.paste(tile, (pad + c * (tw + pad), y))
        text = "\n".join(textwrap.wrap(prompt, width=max(12, (len(labels) * (tw + pad)) // 7))[:2])
        draw.text((pad, y + th + 2), text, fill="black", font=font)
    return grid

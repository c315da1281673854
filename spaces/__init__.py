"""The Gradio Space (`python spaces/app.py`). On a Hugging Face Space these files sit at the repo root instead,
with `modeling_infodisent/` copied next to them."""

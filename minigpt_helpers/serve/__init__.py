"""Serving (chapter 11): a model behind OpenAI's API, with continuous batching, and a chat page.

    server.py      create_app (FastAPI: /v1/models, /v1/completions, /v1/chat/completions, streaming),
                   the engine thread, serve() and serve_in_background() with uvicorn
    chat.html      the chat page served at / (plain HTML and JavaScript, no build step)

It needs fastapi and uvicorn (the ``course`` extra); the package itself does not import it.
It imports every wing below it (the batching engine of model/, chat templates of finetune/) and nothing above.
"""

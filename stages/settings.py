"""settings: the adapter settings the chosen PEFT method reads (peft, and lora.* or
prompt.*, and quantization.* for qlora), and nothing else.

The train stage depends on this file rather than on every method's params, so editing
prompt.* with peft.method lora (or lora.* with a prompt method) reruns this stage, which
writes the same bytes, and DVC then leaves training alone.
"""

from peftpipe.io import write_json
from peftpipe.methods import get_method, training_settings
from peftpipe.stage import stage


@stage(writes=("settings",))
def main(params, settings):
    """Write what the method reads."""
    found = training_settings(params, get_method(params.peft.method))
    write_json(settings, found)
    print(f"settings: {params.peft.method} reads {', '.join(found)} -> {settings}")


if __name__ == "__main__":
    main()

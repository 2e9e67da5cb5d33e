"""Prompt formats shared by the teacher (text-only backbone) and the student (speech model).

Owner: distillation. The teacher reads the seed description where the student hears audio.
"""

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant who can hear audio. Answer about what you hear."


def teacher_user_message(description: str, instruction: str) -> str:
    return f"Audio: {description}\n\n{instruction}"


def student_user_message(instruction: str, placeholder: str, transcript: str | None = None) -> str:
    audio = placeholder if transcript is None else f'{placeholder} Transcript: "{transcript}"'
    return f"Audio: {audio}\n\n{instruction}"

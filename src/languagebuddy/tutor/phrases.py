"""Short fixed replies in the learner's own language, and the language names we understand.

These answers never need the model: commands, bad input and the apology when the model is down
must work precisely when the model cannot be asked.
"""

from __future__ import annotations

import unicodedata

from languagebuddy.config import CEFR_LEVELS

# ISO 639-1 code -> (English name, autonym). Enough for /language and for prompts.
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("English", "English"),
    "es": ("Spanish", "español"),
    "fr": ("French", "français"),
    "de": ("German", "Deutsch"),
    "it": ("Italian", "italiano"),
    "pt": ("Portuguese", "português"),
    "ja": ("Japanese", "日本語"),
    "zh": ("Chinese", "中文"),
    "ko": ("Korean", "한국어"),
    "ru": ("Russian", "русский"),
    "uk": ("Ukrainian", "українська"),
    "pl": ("Polish", "polski"),
    "nl": ("Dutch", "Nederlands"),
    "sv": ("Swedish", "svenska"),
    "no": ("Norwegian", "norsk"),
    "da": ("Danish", "dansk"),
    "fi": ("Finnish", "suomi"),
    "cs": ("Czech", "čeština"),
    "ro": ("Romanian", "română"),
    "hu": ("Hungarian", "magyar"),
    "el": ("Greek", "ελληνικά"),
    "tr": ("Turkish", "Türkçe"),
    "ar": ("Arabic", "العربية"),
    "he": ("Hebrew", "עברית"),
    "fa": ("Persian", "فارسی"),
    "hi": ("Hindi", "हिन्दी"),
    "bn": ("Bengali", "বাংলা"),
    "ta": ("Tamil", "தமிழ்"),
    "th": ("Thai", "ไทย"),
    "vi": ("Vietnamese", "Tiếng Việt"),
    "id": ("Indonesian", "Bahasa Indonesia"),
    "ms": ("Malay", "Bahasa Melayu"),
    "tl": ("Tagalog", "Tagalog"),
    "sw": ("Swahili", "Kiswahili"),
    "ca": ("Catalan", "català"),
    "eu": ("Basque", "euskara"),
    "gl": ("Galician", "galego"),
    "ga": ("Irish", "Gaeilge"),
    "cy": ("Welsh", "Cymraeg"),
    "eo": ("Esperanto", "Esperanto"),
    "la": ("Latin", "Latina"),
}

# Names learners type in the nine interface languages for the most asked-for languages.
_ALIASES: dict[str, str] = {
    "ingles": "en",
    "anglais": "en",
    "englisch": "en",
    "inglese": "en",
    "英語": "en",
    "英语": "en",
    "영어": "en",
    "castellano": "es",
    "espagnol": "es",
    "spanisch": "es",
    "spagnolo": "es",
    "espanhol": "es",
    "スペイン語": "es",
    "西班牙语": "es",
    "스페인어": "es",
    "frances": "fr",
    "franzosisch": "fr",
    "francese": "fr",
    "フランス語": "fr",
    "法语": "fr",
    "프랑스어": "fr",
    "aleman": "de",
    "allemand": "de",
    "tedesco": "de",
    "alemao": "de",
    "ドイツ語": "de",
    "德语": "de",
    "독일어": "de",
    "italiano": "it",
    "italien": "it",
    "italienisch": "it",
    "イタリア語": "it",
    "意大利语": "it",
    "이탈리아어": "it",
    "portugues": "pt",
    "portugais": "pt",
    "portugiesisch": "pt",
    "portoghese": "pt",
    "ポルトガル語": "pt",
    "葡萄牙语": "pt",
    "포르투갈어": "pt",
    "japones": "ja",
    "japonais": "ja",
    "japanisch": "ja",
    "giapponese": "ja",
    "日本語": "ja",
    "日语": "ja",
    "일본어": "ja",
    "chino": "zh",
    "chinois": "zh",
    "chinesisch": "zh",
    "cinese": "zh",
    "chines": "zh",
    "mandarin": "zh",
    "中国語": "zh",
    "汉语": "zh",
    "中文": "zh",
    "普通话": "zh",
    "중국어": "zh",
    "coreano": "ko",
    "coreen": "ko",
    "koreanisch": "ko",
    "韓国語": "ko",
    "韩语": "ko",
    "한국어": "ko",
    "ruso": "ru",
    "russe": "ru",
    "russisch": "ru",
    "russo": "ru",
    "neerlandes": "nl",
    "hollandais": "nl",
    "niederlandisch": "nl",
    "olandese": "nl",
    "farsi": "fa",
}

PHRASE_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "ja", "zh", "ko")


def _fold(text: str) -> str:
    """Lower-case without accents, so 'Français' and 'francais' match."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_BY_NAME: dict[str, str] = {}
for _code, (_english, _autonym) in LANGUAGES.items():
    _BY_NAME[_fold(_english)] = _code
    _BY_NAME[_fold(_autonym)] = _code
for _alias, _code in _ALIASES.items():
    _BY_NAME[_fold(_alias)] = _code


def language_code(value: str | None) -> str | None:
    """An ISO 639-1 code from a code ('es', 'pt-BR', 'zh_Hans') or a name ('Spanish',
    'español', 'スペイン語'); ``None`` when we do not know it."""
    if not value:
        return None
    folded = _fold(value)
    if folded in _BY_NAME:
        return _BY_NAME[folded]
    base = folded.replace("_", "-").split("-")[0]
    return base if base in LANGUAGES else None


def language_name(code: str | None, *, autonym: bool = False) -> str:
    """'Spanish' (or 'español'); unknown codes are shown as given."""
    if not code:
        return "?"
    names = LANGUAGES.get(code)
    if names is None:
        return code
    return names[1] if autonym else names[0]


def cefr_level(value: str | None) -> str | None:
    """'b1', ' B1 ' -> 'B1'; anything else -> None."""
    if not value:
        return None
    level = value.strip().upper()
    return level if level in CEFR_LEVELS else None


def phrase_language(*candidates: str | None) -> str:
    """The first candidate we have phrases for (native, interface, hint…), else English."""
    for candidate in candidates:
        code = language_code(candidate)
        if code in PHRASE_LANGUAGES:
            return code
    return "en"


_HELP_COMMANDS = "/language es · /level B1 · /voice on|off|auto · /reset · /forget-me · /help"

PHRASES: dict[str, dict[str, str]] = {
    "welcome": {
        "en": "Hi! I'm LanguageBuddy, your language practice partner.",
        "es": "¡Hola! Soy LanguageBuddy, tu compañero para practicar idiomas.",
        "fr": "Salut ! Je suis LanguageBuddy, ton partenaire pour pratiquer les langues.",
        "de": "Hallo! Ich bin LanguageBuddy, dein Partner zum Sprachenüben.",
        "it": "Ciao! Sono LanguageBuddy, il tuo compagno per praticare le lingue.",
        "pt": "Olá! Sou o LanguageBuddy, seu parceiro para praticar idiomas.",
        "ja": "こんにちは！語学練習パートナーのLanguageBuddyです。",
        "zh": "你好！我是LanguageBuddy，你的语言练习伙伴。",
        "ko": "안녕하세요! 언어 연습 파트너 LanguageBuddy예요.",
    },
    "ask_language": {
        "en": "Which language would you like to practise, and what is your level "
        "(A1 beginner … C2 advanced)?",
        "es": "¿Qué idioma quieres practicar y cuál es tu nivel (A1 principiante … C2 avanzado)?",
        "fr": "Quelle langue veux-tu pratiquer, et quel est ton niveau (A1 débutant … C2 avancé) ?",
        "de": "Welche Sprache möchtest du üben, und wie ist dein Niveau "
        "(A1 Anfänger … C2 sehr fortgeschritten)?",
        "it": "Quale lingua vuoi praticare e qual è il tuo livello "
        "(A1 principiante … C2 avanzato)?",
        "pt": "Qual idioma você quer praticar e qual é o seu nível (A1 iniciante … C2 avançado)?",
        "ja": "どの言語を練習したいですか？レベルも教えてください（A1 初級 … C2 上級）。",
        "zh": "你想练习哪种语言？你的水平是多少（A1 入门 … C2 精通）？",
        "ko": "어떤 언어를 연습하고 싶으세요? 수준도 알려 주세요 (A1 초급 … C2 고급).",
    },
    "help": {
        "en": "Just write to me, send a photo or a voice note and we'll practise. Commands: ",
        "es": "Escríbeme, mándame una foto o una nota de voz y practicamos. Comandos: ",
        "fr": "Écris-moi, envoie une photo ou un message vocal et on pratique. Commandes : ",
        "de": "Schreib mir, schick ein Foto oder eine Sprachnachricht, und wir üben. Befehle: ",
        "it": "Scrivimi, mandami una foto o un vocale e facciamo pratica. Comandi: ",
        "pt": "Escreva para mim, mande uma foto ou um áudio e a gente pratica. Comandos: ",
        "ja": "メッセージ、写真、ボイスメッセージを送ってね。一緒に練習しよう。コマンド: ",
        "zh": "给我发文字、照片或语音，我们一起练习。命令：",
        "ko": "메시지, 사진, 음성 메시지를 보내 주시면 함께 연습해요. 명령어: ",
    },
    "apology": {
        "en": "Sorry, I'm having trouble thinking right now. I'll answer shortly.",
        "es": "Perdona, ahora mismo me cuesta pensar. Te respondo enseguida.",
        "fr": "Désolé, j'ai du mal à réfléchir en ce moment. Je te réponds très vite.",
        "de": "Entschuldige, ich komme gerade nicht zum Nachdenken. Ich antworte gleich.",
        "it": "Scusa, in questo momento faccio fatica a pensare. Ti rispondo a breve.",
        "pt": "Desculpe, estou com dificuldade para pensar agora. Já já eu respondo.",
        "ja": "ごめんなさい、今ちょっと考えるのに苦労しています。すぐに返事しますね。",
        "zh": "抱歉，我现在思考有点困难，稍后马上回复你。",
        "ko": "죄송해요, 지금 생각하는 데 문제가 있어요. 곧 답할게요.",
    },
    # Phone calls: the recap sent to the learner's chat after a call, and what the carrier
    # says when the Realtime model cannot be reached during a call.
    "call_recap": {
        "en": "Thanks for the call! New words from it:\n{words}",
        "es": "¡Gracias por la llamada! Palabras nuevas:\n{words}",
        "fr": "Merci pour l'appel ! Les nouveaux mots :\n{words}",
        "de": "Danke für den Anruf! Neue Wörter daraus:\n{words}",
        "it": "Grazie per la chiamata! Le parole nuove:\n{words}",
        "pt": "Obrigado pela ligação! Palavras novas:\n{words}",
        "ja": "お電話ありがとう！新しい単語：\n{words}",
        "zh": "谢谢你的来电！新学的词：\n{words}",
        "ko": "전화 고마워요! 새로 배운 단어:\n{words}",
    },
    "call_recap_plain": {
        "en": "Thanks for the call! We talked for {minutes} min. Write to me here any time.",
        "es": "¡Gracias por la llamada! Hablamos {minutes} min. Escríbeme aquí cuando quieras.",
        "fr": "Merci pour l'appel ! On a parlé {minutes} min. Écris-moi ici quand tu veux.",
        "de": "Danke für den Anruf! Wir haben {minutes} Min. gesprochen. Schreib mir jederzeit.",
        "it": "Grazie per la chiamata! Abbiamo parlato {minutes} min. Scrivimi quando vuoi.",
        "pt": "Obrigado pela ligação! Falamos {minutes} min. Escreva aqui quando quiser.",
        "ja": "お電話ありがとう！{minutes}分話しました。いつでもここに書いてね。",
        "zh": "谢谢你的来电！我们聊了{minutes}分钟。随时在这里给我发消息。",
        "ko": "전화 고마워요! {minutes}분 이야기했어요. 언제든 여기로 메시지 주세요.",
    },
    "call_apology": {
        "en": "Sorry, I can't hear you well right now. Please call me again in a moment.",
        "es": "Perdona, ahora no te oigo bien. Llámame otra vez en un momento.",
        "fr": "Désolé, je ne t'entends pas bien. Rappelle-moi dans un instant.",
        "de": "Entschuldige, ich höre dich gerade schlecht. Ruf mich gleich noch einmal an.",
        "it": "Scusa, ora non ti sento bene. Richiamami tra un momento.",
        "pt": "Desculpe, não estou te ouvindo bem. Me ligue de novo daqui a pouco.",
        "ja": "ごめんなさい、今よく聞こえません。少ししてからもう一度かけてください。",
        "zh": "抱歉，我现在听不清。请稍后再打给我。",
        "ko": "죄송해요, 지금 잘 안 들려요. 잠시 후에 다시 전화해 주세요.",
    },
    "unsupported": {
        "en": "I understand text, photos and voice notes. Could you send one of those?",
        "es": "Entiendo texto, fotos y notas de voz. ¿Me mandas uno de esos?",
        "fr": "Je comprends le texte, les photos et les messages vocaux. Tu peux m'en envoyer un ?",
        "de": "Ich verstehe Text, Fotos und Sprachnachrichten. Schickst du mir eins davon?",
        "it": "Capisco testo, foto e messaggi vocali. Me ne mandi uno?",
        "pt": "Eu entendo texto, fotos e áudios. Pode me mandar um desses?",
        "ja": "テキスト、写真、ボイスメッセージがわかります。そのどれかを送ってください。",
        "zh": "我能看懂文字、照片和语音消息。请发送其中一种吧。",
        "ko": "저는 텍스트, 사진, 음성 메시지를 이해해요. 그중 하나를 보내 주세요.",
    },
    "image_too_large": {
        "en": "That photo is too large for me. Could you send a smaller one?",
        "es": "Esa foto es demasiado grande para mí. ¿Puedes mandar una más pequeña?",
        "fr": "Cette photo est trop lourde pour moi. Tu peux en envoyer une plus petite ?",
        "de": "Das Foto ist mir zu groß. Kannst du ein kleineres schicken?",
        "it": "Questa foto è troppo grande per me. Puoi mandarne una più piccola?",
        "pt": "Essa foto é grande demais para mim. Pode mandar uma menor?",
        "ja": "その写真は大きすぎます。もう少し小さい写真を送ってもらえますか？",
        "zh": "这张照片太大了。可以发一张小一点的吗？",
        "ko": "사진이 너무 커요. 더 작은 사진을 보내 주시겠어요?",
    },
    "image_too_many_pixels": {
        "en": "That image has too many pixels for me. Could you send a smaller photo?",
        "es": "Esa imagen tiene demasiados píxeles. ¿Puedes mandar una foto más pequeña?",
        "fr": "Cette image a trop de pixels pour moi. Tu peux envoyer une photo plus petite ?",
        "de": "Das Bild hat zu viele Pixel. Kannst du ein kleineres Foto schicken?",
        "it": "Questa immagine ha troppi pixel. Puoi mandare una foto più piccola?",
        "pt": "Essa imagem tem pixels demais. Pode mandar uma foto menor?",
        "ja": "その画像は画素数が多すぎます。小さめの写真を送ってもらえますか？",
        "zh": "这张图片像素太多了。可以发一张小一点的照片吗？",
        "ko": "이미지 픽셀이 너무 많아요. 더 작은 사진을 보내 주시겠어요?",
    },
    "image_truncated": {
        "en": "That photo arrived incomplete. Could you send it again?",
        "es": "Esa foto llegó incompleta. ¿Puedes mandarla otra vez?",
        "fr": "Cette photo est arrivée incomplète. Tu peux la renvoyer ?",
        "de": "Das Foto kam unvollständig an. Kannst du es noch einmal schicken?",
        "it": "La foto è arrivata incompleta. Puoi rimandarla?",
        "pt": "Essa foto chegou incompleta. Pode mandar de novo?",
        "ja": "写真が途中までしか届きませんでした。もう一度送ってもらえますか？",
        "zh": "这张照片没有完整收到。可以再发一次吗？",
        "ko": "사진이 일부만 도착했어요. 다시 보내 주시겠어요?",
    },
    "image_not_an_image": {
        "en": "I couldn't open that as a picture. Could you send a photo (JPEG or PNG)?",
        "es": "No pude abrir eso como imagen. ¿Puedes mandar una foto (JPEG o PNG)?",
        "fr": "Je n'ai pas pu ouvrir ça comme image. Tu peux envoyer une photo (JPEG ou PNG) ?",
        "de": "Das konnte ich nicht als Bild öffnen. Schickst du ein Foto (JPEG oder PNG)?",
        "it": "Non riesco ad aprirlo come immagine. Puoi mandare una foto (JPEG o PNG)?",
        "pt": "Não consegui abrir isso como imagem. Pode mandar uma foto (JPEG ou PNG)?",
        "ja": "画像として開けませんでした。写真（JPEGかPNG）を送ってもらえますか？",
        "zh": "我无法把它当作图片打开。可以发一张照片（JPEG或PNG）吗？",
        "ko": "이미지로 열 수 없었어요. 사진(JPEG 또는 PNG)을 보내 주시겠어요?",
    },
    "image_download_failed": {
        "en": "I couldn't download that photo. Could you send it again?",
        "es": "No pude descargar esa foto. ¿Puedes mandarla otra vez?",
        "fr": "Je n'ai pas pu télécharger cette photo. Tu peux la renvoyer ?",
        "de": "Ich konnte das Foto nicht herunterladen. Kannst du es noch einmal schicken?",
        "it": "Non sono riuscito a scaricare la foto. Puoi rimandarla?",
        "pt": "Não consegui baixar essa foto. Pode mandar de novo?",
        "ja": "写真をダウンロードできませんでした。もう一度送ってもらえますか？",
        "zh": "我没能下载这张照片。可以再发一次吗？",
        "ko": "사진을 내려받지 못했어요. 다시 보내 주시겠어요?",
    },
    "audio_corrupt": {
        "en": "I couldn't play that voice note. Could you record it again?",
        "es": "No pude reproducir esa nota de voz. ¿Puedes grabarla otra vez?",
        "fr": "Je n'ai pas pu lire ce message vocal. Tu peux le réenregistrer ?",
        "de": "Ich konnte die Sprachnachricht nicht abspielen. Nimmst du sie noch einmal auf?",
        "it": "Non riesco a riprodurre il vocale. Puoi registrarlo di nuovo?",
        "pt": "Não consegui tocar esse áudio. Pode gravar de novo?",
        "ja": "ボイスメッセージを再生できませんでした。もう一度録音してもらえますか？",
        "zh": "我无法播放这条语音。可以重新录一次吗？",
        "ko": "음성 메시지를 재생할 수 없었어요. 다시 녹음해 주시겠어요?",
    },
    "audio_too_long": {
        "en": "That voice note is too long for me. Could you send a shorter one?",
        "es": "Esa nota de voz es demasiado larga. ¿Puedes mandar una más corta?",
        "fr": "Ce message vocal est trop long pour moi. Tu peux en envoyer un plus court ?",
        "de": "Die Sprachnachricht ist mir zu lang. Schickst du eine kürzere?",
        "it": "Il vocale è troppo lungo per me. Puoi mandarne uno più breve?",
        "pt": "Esse áudio é longo demais. Pode mandar um mais curto?",
        "ja": "そのボイスメッセージは長すぎます。短めのものを送ってもらえますか？",
        "zh": "这条语音太长了。可以发一条短一点的吗？",
        "ko": "음성 메시지가 너무 길어요. 더 짧게 보내 주시겠어요?",
    },
    "audio_empty": {
        "en": "That voice note was empty or too short for me to hear anything. Could you "
        "record it again?",
        "es": "Esa nota de voz estaba vacía o era demasiado corta. ¿Puedes grabarla otra vez?",
        "fr": "Ce message vocal était vide ou trop court. Tu peux le réenregistrer ?",
        "de": "Die Sprachnachricht war leer oder zu kurz. Nimmst du sie noch einmal auf?",
        "it": "Il vocale era vuoto o troppo breve. Puoi registrarlo di nuovo?",
        "pt": "Esse áudio estava vazio ou curto demais. Pode gravar de novo?",
        "ja": "ボイスメッセージが空か、短すぎました。もう一度録音してもらえますか？",
        "zh": "这条语音是空的或太短了。可以重新录一次吗？",
        "ko": "음성 메시지가 비어 있거나 너무 짧아요. 다시 녹음해 주시겠어요?",
    },
    "audio_silent": {
        "en": "I couldn't hear any speech in that voice note. Could you try again a little "
        "closer to the microphone?",
        "es": "No oí ninguna voz en esa nota de voz. ¿Lo intentas otra vez un poco más cerca "
        "del micrófono?",
        "fr": "Je n'ai entendu aucune voix dans ce message vocal. Tu peux réessayer un peu plus "
        "près du micro ?",
        "de": "In der Sprachnachricht habe ich keine Stimme gehört. Versuch es noch einmal "
        "etwas näher am Mikrofon.",
        "it": "Non ho sentito nessuna voce nel vocale. Puoi riprovare un po' più vicino al "
        "microfono?",
        "pt": "Não ouvi nenhuma voz nesse áudio. Pode tentar de novo um pouco mais perto do "
        "microfone?",
        "ja": "ボイスメッセージから声が聞こえませんでした。マイクに少し近づいて、もう一度試して"
        "もらえますか？",
        "zh": "我在这条语音里没有听到说话声。可以靠近麦克风再试一次吗？",
        "ko": "음성 메시지에서 목소리가 들리지 않았어요. 마이크에 조금 더 가까이 대고 다시 해 "
        "보시겠어요?",
    },
    "audio_too_large": {
        "en": "That audio file is too large for me. Could you send a shorter voice note?",
        "es": "Ese archivo de audio es demasiado grande. ¿Puedes mandar una nota de voz más corta?",
        "fr": "Ce fichier audio est trop lourd pour moi. Tu peux envoyer un message vocal plus "
        "court ?",
        "de": "Die Audiodatei ist mir zu groß. Schickst du eine kürzere Sprachnachricht?",
        "it": "Il file audio è troppo grande per me. Puoi mandare un vocale più breve?",
        "pt": "Esse arquivo de áudio é grande demais. Pode mandar um áudio mais curto?",
        "ja": "その音声ファイルは大きすぎます。短めのボイスメッセージを送ってもらえますか？",
        "zh": "这个音频文件太大了。可以发一条短一点的语音吗？",
        "ko": "오디오 파일이 너무 커요. 더 짧은 음성 메시지를 보내 주시겠어요?",
    },
    "audio_download_failed": {
        "en": "I couldn't download that voice note. Could you send it again?",
        "es": "No pude descargar esa nota de voz. ¿Puedes mandarla otra vez?",
        "fr": "Je n'ai pas pu télécharger ce message vocal. Tu peux le renvoyer ?",
        "de": "Ich konnte die Sprachnachricht nicht herunterladen. Kannst du sie noch einmal "
        "schicken?",
        "it": "Non sono riuscito a scaricare il vocale. Puoi rimandarlo?",
        "pt": "Não consegui baixar esse áudio. Pode mandar de novo?",
        "ja": "ボイスメッセージをダウンロードできませんでした。もう一度送ってもらえますか？",
        "zh": "我没能下载这条语音。可以再发一次吗？",
        "ko": "음성 메시지를 내려받지 못했어요. 다시 보내 주시겠어요?",
    },
    "you_said": {
        "en": "You said: “{text}”",
        "es": "Dijiste: «{text}»",
        "fr": "Tu as dit : « {text} »",
        "de": "Du hast gesagt: „{text}“",
        "it": "Hai detto: «{text}»",
        "pt": "Você disse: “{text}”",
        "ja": "「{text}」と聞こえました。",
        "zh": "你说的是：“{text}”",
        "ko": "이렇게 들었어요: “{text}”",
    },
    "problem_generic": {
        "en": "I couldn't use that message. Could you try again, or send text?",
        "es": "No pude usar ese mensaje. ¿Lo intentas otra vez o me escribes?",
        "fr": "Je n'ai pas pu utiliser ce message. Tu réessaies, ou tu m'écris ?",
        "de": "Mit dieser Nachricht konnte ich nichts anfangen. Versuch es noch einmal "
        "oder schreib mir.",
        "it": "Non sono riuscito a usare quel messaggio. Riprovi o mi scrivi?",
        "pt": "Não consegui usar essa mensagem. Tenta de novo ou me escreve?",
        "ja": "そのメッセージは使えませんでした。もう一度試すか、テキストで送ってください。",
        "zh": "我无法使用这条消息。请再试一次，或者发文字给我。",
        "ko": "그 메시지는 사용할 수 없었어요. 다시 시도하거나 글로 보내 주세요.",
    },
    "language_set": {
        "en": "Great, we'll practise {language}.",
        "es": "¡Genial! Practicaremos {language}.",
        "fr": "Super, on va pratiquer : {language}.",
        "de": "Super, wir üben {language}.",
        "it": "Perfetto, faremo pratica di {language}.",
        "pt": "Ótimo, vamos praticar {language}.",
        "ja": "いいですね。{language}を練習しましょう。",
        "zh": "好的，我们来练习{language}。",
        "ko": "좋아요, {language}를 연습해요.",
    },
    "unknown_language": {
        "en": "I don't know that language. Try a name or a code, e.g. /language es",
        "es": "No conozco ese idioma. Prueba con un nombre o un código, p. ej. /language es",
        "fr": "Je ne connais pas cette langue. Essaie un nom ou un code, ex. /language es",
        "de": "Diese Sprache kenne ich nicht. Versuch einen Namen oder Code, z. B. /language es",
        "it": "Non conosco questa lingua. Prova un nome o un codice, es. /language es",
        "pt": "Não conheço esse idioma. Tente um nome ou um código, ex. /language es",
        "ja": "その言語はわかりません。名前かコードで指定してください（例: /language es）。",
        "zh": "我不认识这种语言。请用名称或代码，例如 /language es",
        "ko": "모르는 언어예요. 이름이나 코드로 입력해 주세요. 예: /language es",
    },
    "level_set": {
        "en": "Level set to {level}.",
        "es": "Nivel cambiado a {level}.",
        "fr": "Niveau réglé sur {level}.",
        "de": "Niveau auf {level} gesetzt.",
        "it": "Livello impostato a {level}.",
        "pt": "Nível definido como {level}.",
        "ja": "レベルを{level}に設定しました。",
        "zh": "水平已设为{level}。",
        "ko": "수준을 {level}(으)로 설정했어요.",
    },
    "bad_level": {
        "en": "Levels go from A1 (beginner) to C2 (advanced), e.g. /level B1",
        "es": "Los niveles van de A1 (principiante) a C2 (avanzado), p. ej. /level B1",
        "fr": "Les niveaux vont de A1 (débutant) à C2 (avancé), ex. /level B1",
        "de": "Die Niveaus reichen von A1 (Anfänger) bis C2 (sehr fortgeschritten), "
        "z. B. /level B1",
        "it": "I livelli vanno da A1 (principiante) a C2 (avanzato), es. /level B1",
        "pt": "Os níveis vão de A1 (iniciante) a C2 (avançado), ex. /level B1",
        "ja": "レベルはA1（初級）からC2（上級）までです。例: /level B1",
        "zh": "水平从A1（入门）到C2（精通），例如 /level B1",
        "ko": "수준은 A1(초급)부터 C2(고급)까지예요. 예: /level B1",
    },
    "voice_on": {
        "en": "OK, I'll answer with voice notes.",
        "es": "Vale, te responderé con notas de voz.",
        "fr": "D'accord, je répondrai par messages vocaux.",
        "de": "Okay, ich antworte mit Sprachnachrichten.",
        "it": "Ok, ti risponderò con messaggi vocali.",
        "pt": "Ok, vou responder com áudios.",
        "ja": "わかりました。ボイスメッセージで返事します。",
        "zh": "好的，我会用语音回复你。",
        "ko": "좋아요, 음성 메시지로 답할게요.",
    },
    "voice_off": {
        "en": "OK, I'll answer with text.",
        "es": "Vale, te responderé por escrito.",
        "fr": "D'accord, je répondrai par écrit.",
        "de": "Okay, ich antworte mit Text.",
        "it": "Ok, ti risponderò per iscritto.",
        "pt": "Ok, vou responder por texto.",
        "ja": "わかりました。テキストで返事します。",
        "zh": "好的，我会用文字回复你。",
        "ko": "좋아요, 글로 답할게요.",
    },
    "voice_auto": {
        "en": "OK: I'll answer voice notes with voice and text messages with text.",
        "es": "Vale: responderé a las notas de voz con voz y a los mensajes de texto con texto.",
        "fr": "D'accord : je répondrai aux messages vocaux à l'oral et aux messages écrits par "
        "écrit.",
        "de": "Okay: Auf Sprachnachrichten antworte ich mit Sprache, auf Text mit Text.",
        "it": "Ok: risponderò ai vocali con la voce e ai messaggi scritti per iscritto.",
        "pt": "Ok: vou responder áudios com áudio e mensagens de texto com texto.",
        "ja": "わかりました。ボイスメッセージには音声で、テキストにはテキストで返事します。",
        "zh": "好的：语音消息我用语音回复，文字消息用文字回复。",
        "ko": "좋아요: 음성 메시지에는 음성으로, 글에는 글로 답할게요.",
    },
    "voice_usage": {
        "en": "Use /voice on, /voice off or /voice auto.",
        "es": "Usa /voice on, /voice off o /voice auto.",
        "fr": "Utilise /voice on, /voice off ou /voice auto.",
        "de": "Nutze /voice on, /voice off oder /voice auto.",
        "it": "Usa /voice on, /voice off o /voice auto.",
        "pt": "Use /voice on, /voice off ou /voice auto.",
        "ja": "/voice on、/voice off、/voice auto のいずれかを使ってください。",
        "zh": "请使用 /voice on、/voice off 或 /voice auto。",
        "ko": "/voice on, /voice off 또는 /voice auto 를 사용하세요.",
    },
    "reset_done": {
        "en": "Done: I've forgotten our conversation. Your profile and words are kept.",
        "es": "Hecho: he olvidado nuestra conversación. Tu perfil y tus palabras se quedan.",
        "fr": "C'est fait : j'ai oublié notre conversation. Ton profil et tes mots sont gardés.",
        "de": "Erledigt: Ich habe unser Gespräch vergessen. Profil und Wörter bleiben.",
        "it": "Fatto: ho dimenticato la nostra conversazione. Profilo e parole restano.",
        "pt": "Pronto: esqueci nossa conversa. Seu perfil e suas palavras continuam salvos.",
        "ja": "会話を忘れました。プロフィールと単語は残っています。",
        "zh": "好了，我已经忘记我们的对话。你的资料和单词会保留。",
        "ko": "대화를 잊었어요. 프로필과 단어는 그대로 남아 있어요.",
    },
    "forgotten": {
        "en": "All your data has been deleted. Goodbye, and good luck!",
        "es": "Todos tus datos han sido borrados. ¡Adiós y mucha suerte!",
        "fr": "Toutes tes données ont été supprimées. Au revoir et bonne chance !",
        "de": "Alle deine Daten wurden gelöscht. Tschüss und viel Erfolg!",
        "it": "Tutti i tuoi dati sono stati cancellati. Ciao e in bocca al lupo!",
        "pt": "Todos os seus dados foram apagados. Tchau e boa sorte!",
        "ja": "あなたのデータはすべて削除しました。さようなら、頑張ってね！",
        "zh": "你的所有数据都已删除。再见，祝你好运！",
        "ko": "모든 데이터를 삭제했어요. 안녕히 가세요, 행운을 빌어요!",
    },
    "unknown_command": {
        "en": "I don't know that command.",
        "es": "No conozco ese comando.",
        "fr": "Je ne connais pas cette commande.",
        "de": "Diesen Befehl kenne ich nicht.",
        "it": "Non conosco questo comando.",
        "pt": "Não conheço esse comando.",
        "ja": "そのコマンドはわかりません。",
        "zh": "我不认识这个命令。",
        "ko": "모르는 명령어예요.",
    },
}


def phrase(key: str, lang: str, **values: str) -> str:
    """The phrase in ``lang`` (English when missing), with ``{placeholders}`` filled."""
    table = PHRASES[key]
    text = table.get(lang) or table["en"]
    if key == "help":
        text += _HELP_COMMANDS
    return text.format(**values) if values else text


def problem_phrase(problem: str | None, lang: str) -> str:
    """The reply for an input problem code; unknown codes get a generic one."""
    if problem and problem in PHRASES and problem.startswith(("image_", "audio_")):
        return phrase(problem, lang)
    return phrase("problem_generic", lang)
